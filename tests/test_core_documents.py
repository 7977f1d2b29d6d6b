"""The SCIM core without I/O: reading bodies, PATCH in both Entra dialects, filters, projection."""

from __future__ import annotations

import pytest

from scim.core.errors import InvalidFilter, InvalidPath, InvalidSyntax, InvalidValue, Mutability, NoTarget
from scim.core.filtering import matches, parse_filter
from scim.core.lookup import plan_lookup
from scim.core.patching import apply_patch, parse_patch_request
from scim.core.projection import parse_projection
from scim.core.resource import index_terms, parse_resource, render
from scim.core.schema import ENTERPRISE_USER_URN, GROUP, USER
from scim.store.base import Member, StoredResource
from tests.payloads import payload

CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExtension:2.0:User"


def _patch(doc, name, **subs):
    return apply_patch(USER, doc, parse_patch_request(payload(name, **subs)))


def _user_doc():
    return parse_resource(USER, payload("entra-post-user.json")).doc


def _stored(doc, rtype="User", **kw):
    return StoredResource(rtype, "id-1", doc, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", 'W/"1"', **kw)


def test_entra_post_user_is_stored_as_sent_without_meta_and_empty_roles():
    doc = _user_doc()
    assert "meta" not in doc and "roles" not in doc and "schemas" not in doc
    assert doc["emails"] == [
        {"primary": True, "type": "work", "value": "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@contoso.com"}
    ]
    assert doc[ENTERPRISE_USER_URN] == {"department": "Retail", "employeeNumber": "E1234"}


def test_post_tolerances_case_string_booleans_nulls_and_custom_extensions():
    doc = parse_resource(USER, payload("entra-post-user-tolerances.json")).doc
    assert doc["userName"] == "Tolerant.User@contoso.com"
    assert doc["active"] is True
    assert doc["emails"] == [{"primary": True, "type": "work", "value": "tolerant@contoso.com"}]
    assert "nickName" not in doc and "title" not in doc
    assert doc[ENTERPRISE_USER_URN] == {"department": "Sales"}
    assert doc[CUSTOM] == {"badgeNumber": "B-42", "building": "North"}


def test_render_lists_extension_schemas_and_manager_as_object():
    doc = _user_doc()
    doc[ENTERPRISE_USER_URN]["manager"] = {"value": "m-1"}
    body = render(USER, _stored(doc, groups=("g-1",)), "https://x/scim/t")
    assert body["schemas"] == [USER.schema.id, ENTERPRISE_USER_URN]
    assert body[ENTERPRISE_USER_URN]["manager"] == {"value": "m-1", "$ref": "https://x/scim/t/Users/m-1"}
    assert body["groups"] == [{"value": "g-1", "$ref": "https://x/scim/t/Groups/g-1", "type": "direct"}]
    assert body["meta"]["location"] == "https://x/scim/t/Users/id-1"
    assert body["meta"]["version"] == 'W/"1"'


@pytest.mark.parametrize("body", [[], "x", {"userName": None}, {"active": True}])
def test_user_without_username_or_not_an_object_is_rejected(body):
    with pytest.raises((InvalidValue, InvalidSyntax)):
        parse_resource(USER, body)


def test_bad_boolean_is_invalid_value():
    with pytest.raises(InvalidValue):
        parse_resource(USER, {"userName": "a", "active": "maybe"})


def test_index_terms_fold_case_where_rfc_says_case_insensitive():
    terms = index_terms(
        USER, {"userName": "Bob@X.com", "externalId": "AbC", "emails": [{"value": "B@X.com", "type": "work"}]}
    )
    assert terms.unique == {"userName": "bob@x.com"}
    assert ("externalId", "AbC") in terms.multi and ("emails.value", "b@x.com") in terms.multi
    assert index_terms(GROUP, {"displayName": "Sales"}).unique == {"displayName": "sales"}


def test_default_dialect_patch_applies_every_entra_path():
    result = _patch(_user_doc(), "entra-patch-user-default.json")
    doc = result.doc
    assert doc["displayName"] == "Giv Fam (changed)"
    assert doc["name"] == {"formatted": "Giv Fam", "familyName": "Fam", "givenName": "Giver"}
    assert doc["title"] == "Manager"
    assert doc[ENTERPRISE_USER_URN]["department"] == "Finance"
    assert doc["phoneNumbers"] == [{"type": "mobile", "value": "+1 555 0100"}]
    assert doc["addresses"] == [{"type": "work", "formatted": "1 Main St"}]


def test_aadoptscim_pathless_patch_with_dotted_and_urn_keys():
    doc = parse_resource(USER, payload("entra-post-user-tolerances.json")).doc
    result = _patch(doc, "entra-patch-user-aadoptscim062020.json").doc
    assert result["displayName"] == "Giv Fam (changed)"
    assert result["name"] == {"givenName": "Giver", "familyName": "Family"}
    assert result[ENTERPRISE_USER_URN] == {"department": "Sales", "employeeNumber": "E999"}
    assert result[CUSTOM] == {"badgeNumber": "B-7", "building": "North"}
    assert result["active"] is True


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("entra-patch-disable-default.json", False),
        ("entra-patch-disable-aadoptscim062020.json", False),
        ("entra-patch-enable-default.json", True),
    ],
)
def test_active_accepts_string_and_json_booleans(name, expected):
    assert _patch(_user_doc(), name).doc["active"] is expected


def test_add_on_missing_work_email_creates_the_entry():
    doc = _user_doc()
    doc.pop("emails")
    result = _patch(doc, "entra-patch-work-email-create.json").doc
    assert result["emails"] == [{"type": "work", "value": "new.work@contoso.com"}]


def test_add_on_existing_work_email_replaces_its_value_only():
    result = _patch(_user_doc(), "entra-patch-work-email-create.json").doc
    assert result["emails"] == [{"primary": True, "type": "work", "value": "new.work@contoso.com"}]


def test_manager_bare_id_becomes_object_and_empty_string_removes_it():
    doc = _patch(_user_doc(), "entra-patch-manager-add.json", MANAGER_ID="m-42").doc
    assert doc[ENTERPRISE_USER_URN]["manager"] == {"value": "m-42"}
    cleared = apply_patch(USER, doc, parse_patch_request(payload("entra-patch-manager-clear.json"))).doc
    assert "manager" not in cleared[ENTERPRISE_USER_URN]


def test_roles_serialised_into_strings_round_trip_as_sent():
    sent = payload("entra-patch-roles-serialized.json")["Operations"][0]["value"]
    doc = _patch(_user_doc(), "entra-patch-roles-serialized.json").doc
    assert doc["roles"] == sent


def test_bare_string_role_items_are_decoded_and_string_primary_becomes_boolean():
    ops = parse_patch_request(
        {"Operations": [{"op": "add", "path": "roles", "value": ['{"value":"Admin","primary":"True"}']}]}
    )
    assert apply_patch(USER, _user_doc(), ops).doc["roles"] == [{"value": "Admin", "primary": True}]


def test_remove_with_value_removes_only_listed_items():
    doc = {"userName": "u", "emails": [{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}]}
    ops = parse_patch_request({"Operations": [{"op": "Remove", "path": "emails", "value": [{"value": "a@x"}]}]})
    assert apply_patch(USER, doc, ops).doc["emails"] == [{"value": "b@x", "type": "home"}]


def test_remove_filtered_and_sub_attribute():
    doc = {
        "userName": "u",
        "name": {"givenName": "g", "familyName": "f"},
        "emails": [{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}],
    }
    ops = parse_patch_request(
        {
            "Operations": [
                {"op": "remove", "path": 'emails[type eq "work"]'},
                {"op": "remove", "path": "name.givenName"},
            ]
        }
    )
    result = apply_patch(USER, doc, ops).doc
    assert result["emails"] == [{"value": "b@x", "type": "home"}]
    assert result["name"] == {"familyName": "f"}


def test_patch_does_not_modify_input_and_is_all_or_nothing():
    doc = _user_doc()
    before = repr(doc)
    ops = parse_patch_request(
        {
            "Operations": [
                {"op": "replace", "path": "title", "value": "x"},
                {"op": "replace", "path": "active", "value": "nope"},
            ]
        }
    )
    with pytest.raises(InvalidValue):
        apply_patch(USER, doc, ops)
    assert repr(doc) == before


def test_ops_names_are_case_insensitive_and_bad_ones_rejected():
    assert parse_patch_request({"operations": [{"OP": "REPLACE", "Path": "title", "Value": "x"}]})[0].op == "replace"
    with pytest.raises(InvalidSyntax):
        parse_patch_request({"Operations": [{"op": "move", "path": "title", "value": 1}]})
    with pytest.raises(InvalidSyntax):
        parse_patch_request({"Operations": []})
    with pytest.raises(InvalidPath):
        apply_patch(
            USER,
            _user_doc(),
            parse_patch_request({"Operations": [{"op": "add", "path": "emails[type eq", "value": "x"}]}),
        )
    with pytest.raises(NoTarget):
        parse_patch_request({"Operations": [{"op": "remove"}]})


def test_read_only_and_required_attributes():
    with pytest.raises(Mutability):
        apply_patch(
            USER, _user_doc(), parse_patch_request({"Operations": [{"op": "replace", "path": "id", "value": "x"}]})
        )
    with pytest.raises(InvalidValue):
        apply_patch(USER, _user_doc(), parse_patch_request({"Operations": [{"op": "remove", "path": "userName"}]}))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("entra-patch-add-member-default.json", "add"),
        ("entra-patch-add-member-aadoptscim062020.json", "add"),
        ("entra-patch-remove-member-default.json", "remove"),
        ("entra-patch-remove-member-aadoptscim062020.json", "remove"),
    ],
)
def test_member_patches_become_store_changes_naming_only_the_listed_member(name, kind):
    ops = parse_patch_request(payload(name, USER_ID="u-1"))
    result = apply_patch(GROUP, {"displayName": "Sales"}, ops)
    assert [(c.kind, c.members) for c in result.member_changes] == [(kind, [Member("u-1")])]
    assert result.doc == {"displayName": "Sales"}


def test_filters_on_rendered_users():
    user = render(USER, _stored(_user_doc()), "https://x/scim/t")
    cases = {
        'userName eq "TEST_USER_AB6490EE-1E48-479E-A20B-2D77186B5DD1@contoso.com"': True,
        'externalId eq "0A21F0F2-8D2A-4F8E-BF98-7363C4AED4EF"': False,
        'emails[type eq "work"].value eq "test_user_fd0ea19b-0777-472c-9f96-4f70d2226f2e@contoso.com"': True,
        'emails[type eq "home"].value pr': False,
        'name.familyName sw "F" and active eq true': True,
        "not (active eq true) or title pr": False,
        'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "retail"': True,
        'meta.created gt "2025-12-31T00:00:00Z"': True,
        'meta.lastModified lt "2025-12-31T00:00:00Z"': False,
        'userName co "ab6490ee" and (emails.value ew "contoso.com")': True,
        'userName ne "x"': True,
    }
    for expression, expected in cases.items():
        assert matches(parse_filter(expression), user, USER) is expected, expression


@pytest.mark.parametrize("expression", ["userName eq", 'userName xx "a"', '(userName eq "a"', 'userName eq "a" and'])
def test_unparseable_filters_are_invalid_filter(expression):
    with pytest.raises(InvalidFilter):
        parse_filter(expression)


def test_index_plans_for_entra_lookups():
    def plan(expression, rtype=USER):
        return plan_lookup(parse_filter(expression), rtype)

    assert plan('userName eq "Bob"').terms == {("userName", "bob")}
    assert plan('externalId eq "Bob"').terms == {("externalId", "Bob")}
    assert plan('emails[type eq "work"].value eq "B@x"').terms == {("emails.value", "b@x")}
    assert plan('id eq "abc"').ids == {"abc"}
    assert plan('displayName eq "Sales"', GROUP).terms == {("displayName", "sales")}
    assert plan('userName eq "a" and active eq true').terms == {("userName", "a")}
    assert plan('userName eq "a" or userName eq "b"').terms == {("userName", "a"), ("userName", "b")}
    assert plan('userName sw "A"').prefixes == {("userName", "a")}
    assert plan('externalId sw "A"').prefixes == {("externalId", "A")}
    assert plan('title sw "a"') is None
    assert plan('id sw "a"') is None
    assert plan('userName eq "a" or title eq "b"') is None


def test_projection_attributes_and_excluded_attributes():
    group = render(GROUP, _stored({"displayName": "Sales"}, "Group", members=(Member("u"),)), "https://x/scim/t")
    excluded = parse_projection(GROUP, None, "members")
    assert not excluded.wants("members")
    assert "members" not in excluded.apply(group) and excluded.apply(group)["displayName"] == "Sales"
    user = render(USER, _stored(_user_doc()), "https://x/scim/t")
    only = parse_projection(
        USER, "userName,name.givenName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", None
    ).apply(user)
    assert set(only) == {"schemas", "id", "userName", "name", ENTERPRISE_USER_URN}
    assert only["name"] == {"givenName": "Giv"} and only[ENTERPRISE_USER_URN] == {"department": "Retail"}


def test_the_indexed_attributes_are_declared_once_in_the_schema_registry() -> None:
    """index_terms and the filter planner both read ResourceType.indexed/unique (issue 11: the
    indexed attributes were written in three places): declaring one more path indexes it and
    lets an eq filter on it use the index, with the attribute's caseExact."""
    import dataclasses

    custom = dataclasses.replace(USER, indexed=(*USER.indexed, "nickName", "phoneNumbers.value"))
    doc = {"userName": "Bob", "nickName": "Bobby", "phoneNumbers": [{"value": "+1 555", "type": "work"}]}
    terms = index_terms(custom, doc)
    assert terms.unique == {"userName": "bob"}
    assert {("nickName", "bobby"), ("phoneNumbers.value", "+1 555")} <= terms.multi
    assert ("nickName", "bobby") not in index_terms(USER, doc).multi
    plan = plan_lookup(parse_filter('nickName eq "BOBBY"'), custom)
    assert plan is not None and plan.terms == frozenset({("nickName", "bobby")})
    assert plan_lookup(parse_filter('nickName eq "BOBBY"'), USER) is None
    phone = plan_lookup(parse_filter('phoneNumbers[type eq "work" and value eq "+1 555"]'), custom)
    assert phone is not None and phone.terms == frozenset({("phoneNumbers.value", "+1 555")})


def test_what_a_request_may_not_write_comes_from_the_schemas_mutability() -> None:
    """readOnly attributes are ignored in POST/PUT and refused in PATCH, writeOnly ones are not
    stored, as the schema registry says (issue 11: the lists were written in two modules)."""
    import dataclasses

    title = USER.schema.attribute("title")
    assert title is not None
    schema = dataclasses.replace(
        USER.schema,
        attributes=tuple(
            dataclasses.replace(a, mutability="readOnly") if a.name == "title" else a for a in USER.schema.attributes
        ),
    )
    custom = dataclasses.replace(USER, schema=schema)
    body = {"userName": "bob", "title": "Boss", "password": "secret", "id": "x", "meta": {}, "nickName": "B"}
    assert parse_resource(custom, body).doc == {"userName": "bob", "nickName": "B"}
    assert parse_resource(USER, body).doc == {"userName": "bob", "title": "Boss", "nickName": "B"}
    patch = parse_patch_request(
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "X"}],
        }
    )
    with pytest.raises(Mutability):
        apply_patch(custom, {"userName": "bob"}, patch)
    assert apply_patch(USER, {"userName": "bob"}, patch).doc["title"] == "X"
