"""The attribute registry (RFC 7643 §2.2, §4, §8.7.1) and the discovery bodies (RFC 7644 §4)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from scim2_models import ResourceType as ModelResourceType
from scim2_models import Schema as ModelSchema
from scim2_models import ServiceProviderConfig
from scim2_models.provider import ScimProvider

from scim.core import discovery
from scim.core.schema import (
    COMMON_ATTRIBUTES,
    ENTERPRISE_USER_SCHEMA,
    ENTERPRISE_USER_URN,
    GROUP,
    GROUP_SCHEMA,
    GROUP_URN,
    RESOURCE_TYPES,
    SCHEMAS,
    USER,
    USER_SCHEMA,
    USER_URN,
    Attribute,
)

BASE = "http://127.0.0.1:7071/scim/dev"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def spc() -> dict[str, Any]:
    return discovery.service_provider_config(BASE, max_operations=10, max_payload_size=1_048_576, max_results=200)


def every_discovery_body() -> Iterator[tuple[str, Any]]:
    yield "ServiceProviderConfig", spc()
    yield "Schemas", discovery.schemas_list(BASE)
    for urn in SCHEMAS:
        yield f"Schemas/{urn}", discovery.schema_by_id(BASE, urn)
    yield "ResourceTypes", discovery.resource_types_list(BASE)
    for name in RESOURCE_TYPES:
        yield f"ResourceTypes/{name}", discovery.resource_type_by_id(BASE, name)


def nulls(value: Any, path: str = "$") -> Iterator[str]:
    """The JSON paths of every None in ``value``."""
    if value is None:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from nulls(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nulls(item, f"{path}[{index}]")


def attribute_bodies(attributes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for attribute in attributes:
        yield attribute
        yield from attribute_bodies(attribute.get("subAttributes", []))


# --- No nulls, JSON all the way down -------------------------------------------------


@pytest.mark.parametrize(("endpoint", "body"), list(every_discovery_body()))
def test_discovery_bodies_have_no_null_anywhere(endpoint: str, body: Any) -> None:
    assert body is not None, endpoint
    assert list(nulls(body)) == []
    assert json.loads(json.dumps(body)) == body


def test_null_check_finds_nested_nulls() -> None:
    assert list(nulls({"a": [{"b": None}], "c": 1})) == ["$.a[0].b"]


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=list(SCHEMAS))
def test_every_attribute_definition_states_every_characteristic(schema: Any) -> None:
    characteristics = {
        "name", "type", "multiValued", "description", "required",
        "caseExact", "mutability", "returned", "uniqueness",
    }  # fmt: skip
    for body in attribute_bodies(schema.to_json(BASE)["attributes"]):
        assert characteristics <= body.keys(), body["name"]
        for optional in ("canonicalValues", "referenceTypes", "subAttributes"):
            assert body.get(optional, ["non-empty"]) != [], (body["name"], optional)


def test_attribute_json_omits_empty_lists_and_keeps_filled_ones() -> None:
    assert Attribute("nickName", "string").to_json() == {
        "name": "nickName",
        "type": "string",
        "multiValued": False,
        "description": "",
        "required": False,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    }
    emails = USER_SCHEMA.attribute("emails")
    assert emails is not None
    body = emails.to_json()
    assert body["multiValued"] is True
    assert [sub["name"] for sub in body["subAttributes"]] == ["value", "display", "type", "primary"]
    assert body["subAttributes"][2]["canonicalValues"] == ["work", "home", "other"]


def test_published_discovery_is_understood_by_scim2_models() -> None:
    """What scim2-client (and so scim2-tester) does with our discovery answers."""
    schemas = [ModelSchema.model_validate(s) for s in discovery.schemas_list(BASE)["Resources"]]
    types = [ModelResourceType.model_validate(t) for t in discovery.resource_types_list(BASE)["Resources"]]
    config = ServiceProviderConfig.model_validate(spc())
    provider = ScimProvider.from_discovery(schemas, types, config)
    assert provider is not None
    assert config.patch is not None and config.patch.supported is True
    assert config.bulk is not None and config.bulk.supported is False


# --- The User schema (RFC 7643 §4.1) -------------------------------------------------

USER_ATTRIBUTES = [
    "userName", "name", "displayName", "nickName", "profileUrl", "title", "userType",
    "preferredLanguage", "locale", "timezone", "active", "password", "emails",
    "phoneNumbers", "ims", "photos", "addresses", "groups", "entitlements", "roles",
    "x509Certificates",
]  # fmt: skip


def test_user_schema_has_exactly_the_rfc7643_attributes_in_canonical_spelling() -> None:
    assert [a.name for a in USER_SCHEMA.attributes] == USER_ATTRIBUTES


@pytest.mark.parametrize(
    ("attribute", "subs"),
    [
        ("name", ["formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"]),
        ("addresses", ["formatted", "streetAddress", "locality", "region", "postalCode", "country", "type", "primary"]),
        ("groups", ["value", "$ref", "display", "type"]),
        ("emails", ["value", "display", "type", "primary"]),
        ("phoneNumbers", ["value", "display", "type", "primary"]),
        ("ims", ["value", "display", "type", "primary"]),
        ("photos", ["value", "display", "type", "primary"]),
        ("entitlements", ["value", "display", "type", "primary"]),
        ("roles", ["value", "display", "type", "primary"]),
        ("x509Certificates", ["value", "display", "type", "primary"]),
    ],
)
def test_user_complex_attributes_have_their_sub_attributes(attribute: str, subs: list[str]) -> None:
    found = USER_SCHEMA.attribute(attribute)
    assert found is not None and found.type == "complex"
    assert [s.name for s in found.sub_attributes] == subs
    assert found.multi_valued is (attribute != "name")


@pytest.mark.parametrize(
    ("attribute", "canonical"),
    [
        ("emails", ("work", "home", "other")),
        ("phoneNumbers", ("work", "home", "mobile", "fax", "pager", "other")),
        ("ims", ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo")),
        ("photos", ("photo", "thumbnail")),
        ("addresses", ("work", "home", "other")),
        ("groups", ("direct", "indirect")),
        ("roles", ()),
    ],
)
def test_canonical_type_values_follow_rfc7643_8_7_1(attribute: str, canonical: tuple[str, ...]) -> None:
    found = USER_SCHEMA.attribute(attribute)
    assert found is not None
    type_ = found.sub("type")
    assert type_ is not None and type_.canonical_values == canonical


def test_user_name_is_required_unique_and_case_insensitive() -> None:
    user_name = USER_SCHEMA.attribute("userName")
    assert user_name is not None
    assert (user_name.required, user_name.case_exact, user_name.uniqueness) == (True, False, "server")


def test_external_id_is_case_exact_and_not_unique() -> None:
    found = USER.attribute("externalId")
    assert found is not None
    schema, external_id = found
    assert schema is USER_SCHEMA
    assert external_id.case_exact is True
    assert external_id.uniqueness == "none"
    assert external_id.mutability == "readWrite"


def test_id_and_meta_are_read_only_common_attributes() -> None:
    assert [a.name for a in COMMON_ATTRIBUTES] == ["id", "externalId", "meta"]
    id_ = COMMON_ATTRIBUTES[0]
    assert (id_.mutability, id_.returned, id_.case_exact, id_.uniqueness) == ("readOnly", "always", True, "server")
    meta = COMMON_ATTRIBUTES[2]
    assert meta.type == "complex" and meta.mutability == "readOnly"
    assert [s.name for s in meta.sub_attributes] == ["resourceType", "created", "lastModified", "location", "version"]
    assert {s.mutability for s in meta.sub_attributes} == {"readOnly"}
    assert meta.sub("created") is not None and meta.sub("created").type == "dateTime"  # type: ignore[union-attr]


def test_common_attributes_are_not_published_inside_schemas() -> None:
    for schema in SCHEMAS.values():
        assert {a["name"] for a in schema.to_json(BASE)["attributes"]}.isdisjoint({"id", "externalId", "meta"})


def test_password_is_write_only_and_never_returned() -> None:
    password = USER_SCHEMA.attribute("password")
    assert password is not None
    assert (password.mutability, password.returned) == ("writeOnly", "never")


def test_user_groups_are_read_only_through_and_through() -> None:
    groups = USER_SCHEMA.attribute("groups")
    assert groups is not None and groups.mutability == "readOnly"
    assert {s.mutability for s in groups.sub_attributes} == {"readOnly"}
    ref = groups.sub("$ref")
    assert ref is not None and ref.type == "reference" and ref.reference_types == ("User", "Group")


def test_typed_user_attributes() -> None:
    types = {a.name: a.type for a in USER_SCHEMA.attributes}
    assert types["active"] == "boolean"
    assert types["profileUrl"] == "reference"
    photos, certificates = USER_SCHEMA.attribute("photos"), USER_SCHEMA.attribute("x509Certificates")
    assert photos is not None and certificates is not None
    assert photos.sub("value").type == "reference"  # type: ignore[union-attr]
    assert certificates.sub("value").type == "binary"  # type: ignore[union-attr]
    primary = photos.sub("primary")
    assert primary is not None and primary.type == "boolean"


# --- Enterprise User (RFC 7643 §4.3) and Group (§4.2) --------------------------------


def test_enterprise_user_attributes() -> None:
    names = [a.name for a in ENTERPRISE_USER_SCHEMA.attributes]
    assert names == ["employeeNumber", "costCenter", "organization", "division", "department", "manager"]
    manager = ENTERPRISE_USER_SCHEMA.attribute("manager")
    assert manager is not None and manager.type == "complex" and not manager.multi_valued
    value, ref, display_name = manager.sub("value"), manager.sub("$ref"), manager.sub("displayName")
    assert value is not None and value.type == "string" and value.mutability == "readWrite"
    assert ref is not None and ref.type == "reference" and ref.reference_types == ("User",)
    assert display_name is not None and display_name.mutability == "readOnly"


def test_group_display_name_is_required_unique_and_case_insensitive() -> None:
    display_name = GROUP_SCHEMA.attribute("displayName")
    assert display_name is not None
    assert (display_name.required, display_name.uniqueness, display_name.case_exact) == (True, "server", False)


def test_group_members() -> None:
    members = GROUP_SCHEMA.attribute("members")
    assert members is not None and members.multi_valued and members.mutability == "readWrite"
    mutability = {s.name: s.mutability for s in members.sub_attributes}
    assert mutability == {"value": "immutable", "$ref": "immutable", "type": "immutable", "display": "readOnly"}
    assert members.sub("type").canonical_values == ("User", "Group")  # type: ignore[union-attr]
    assert members.sub("$ref").reference_types == ("User", "Group")  # type: ignore[union-attr]


# --- Lookups ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["userName", "USERNAME", "username", f"{USER_URN}:userName", f"{USER_URN.upper()}:USERNAME"]
)
def test_user_attribute_lookup_ignores_case(name: str) -> None:
    found = USER.attribute(name)
    assert found is not None
    assert found[0] is USER_SCHEMA and found[1].name == "userName"


@pytest.mark.parametrize("urn", [ENTERPRISE_USER_URN, ENTERPRISE_USER_URN.upper(), ENTERPRISE_USER_URN.lower()])
def test_extension_attribute_lookup_by_urn_ignores_case(urn: str) -> None:
    found = USER.attribute(f"{urn}:Manager")
    assert found is not None
    assert found[0] is ENTERPRISE_USER_SCHEMA and found[1].name == "manager"


@pytest.mark.parametrize("name", ["EXTERNALID", "id", "Meta", f"{USER_URN}:externalId"])
def test_common_attributes_resolve_against_the_core_schema(name: str) -> None:
    found = USER.attribute(name)
    assert found is not None and found[0] is USER_SCHEMA
    assert found[1] in COMMON_ATTRIBUTES
    group_found = GROUP.attribute(name.replace(USER_URN, GROUP_URN))
    assert group_found is not None and group_found == (GROUP_SCHEMA, found[1])


@pytest.mark.parametrize(
    "name",
    [
        "nope",
        "department",  # an extension attribute needs its URN
        "name.givenName",  # sub-attribute paths are split by the caller
        f"{ENTERPRISE_USER_URN}:externalId",  # common attributes are not extension attributes
        f"{ENTERPRISE_USER_URN}:nope",
        "urn:ietf:params:scim:schemas:extension:unknown:2.0:User:department",
        ENTERPRISE_USER_URN,  # a URN alone names no attribute
        f"{GROUP_URN}:displayName",  # another resource type's schema
    ],
)
def test_unknown_user_attributes_are_none(name: str) -> None:
    assert USER.attribute(name) is None


def test_group_lookup() -> None:
    found = GROUP.attribute("MEMBERS")
    assert found is not None and found == (GROUP_SCHEMA, GROUP_SCHEMA.attributes[1])
    assert GROUP.attribute(f"{ENTERPRISE_USER_URN}:manager") is None
    assert GROUP.attribute("userName") is None


def test_schema_for_urn_ignores_case_and_covers_extensions() -> None:
    assert USER.schema_for_urn(USER_URN.upper()) is USER_SCHEMA
    assert USER.schema_for_urn(ENTERPRISE_USER_URN.lower()) is ENTERPRISE_USER_SCHEMA
    assert GROUP.schema_for_urn(GROUP_URN) is GROUP_SCHEMA
    assert GROUP.schema_for_urn(ENTERPRISE_USER_URN) is None
    assert USER.schema_for_urn("urn:ietf:params:scim:schemas:core:2.0:Nope") is None


def test_sub_attribute_lookup_ignores_case() -> None:
    name = USER_SCHEMA.attribute("NAME")
    assert name is not None
    assert name.sub("GIVENNAME") is name.sub("givenName") is not None
    emails = USER_SCHEMA.attribute("Emails")
    assert emails is not None and emails.sub("Primary") is not None
    manager = ENTERPRISE_USER_SCHEMA.attribute("manager")
    assert manager is not None and manager.sub("$REF") is not None and manager.sub("DisplayName") is not None
    assert manager.sub("nope") is None
    user_name = USER_SCHEMA.attribute("userName")
    assert user_name is not None and user_name.sub("value") is None


def test_registry_tables_and_resource_types() -> None:
    assert RESOURCE_TYPES == {"User": USER, "Group": GROUP}
    assert SCHEMAS == {USER_URN: USER_SCHEMA, GROUP_URN: GROUP_SCHEMA, ENTERPRISE_USER_URN: ENTERPRISE_USER_SCHEMA}
    assert (USER.endpoint, USER.schema, USER.extensions) == ("/Users", USER_SCHEMA, ((ENTERPRISE_USER_SCHEMA, False),))
    assert (GROUP.endpoint, GROUP.schema, GROUP.extensions) == ("/Groups", GROUP_SCHEMA, ())


def test_definitions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        USER_SCHEMA.attributes[0].required = False  # type: ignore[misc]


# --- Schema resources (RFC 7643 §7) ------------------------------------------------


def test_schema_resource_shape_and_location() -> None:
    body = ENTERPRISE_USER_SCHEMA.to_json(BASE)
    assert body["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:Schema"]
    assert (body["id"], body["name"]) == (ENTERPRISE_USER_URN, "EnterpriseUser")
    assert body["meta"] == {"resourceType": "Schema", "location": f"{BASE}/Schemas/{ENTERPRISE_USER_URN}"}
    assert ENTERPRISE_USER_SCHEMA.to_json(BASE + "/") == body


def test_schemas_list_is_a_list_response_of_the_three_schemas() -> None:
    body = discovery.schemas_list(BASE)
    assert body["schemas"] == [LIST_RESPONSE]
    assert (body["totalResults"], body["itemsPerPage"], body["startIndex"]) == (3, 3, 1)
    assert {r["id"] for r in body["Resources"]} == {USER_URN, GROUP_URN, ENTERPRISE_USER_URN}
    for resource in body["Resources"]:
        assert resource["meta"]["location"] == f"{BASE}/Schemas/{resource['id']}"


@pytest.mark.parametrize("urn", [USER_URN, USER_URN.lower(), USER_URN.upper()])
def test_schema_by_id_ignores_case_and_returns_the_canonical_urn(urn: str) -> None:
    body = discovery.schema_by_id(BASE, urn)
    assert body is not None and body["id"] == USER_URN
    assert body == USER_SCHEMA.to_json(BASE)


@pytest.mark.parametrize("urn", ["nope", "", "urn:ietf:params:scim:schemas:core:2.0:Schema", "User"])
def test_schema_by_unknown_id_is_none(urn: str) -> None:
    assert discovery.schema_by_id(BASE, urn) is None


# --- ResourceType resources (RFC 7643 §6) ------------------------------------------


def test_resource_types_list() -> None:
    body = discovery.resource_types_list(BASE)
    assert body["schemas"] == [LIST_RESPONSE]
    assert (body["totalResults"], body["itemsPerPage"], body["startIndex"]) == (2, 2, 1)
    user, group = body["Resources"]
    assert user == {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User Account",
        "schema": USER_URN,
        "schemaExtensions": [{"schema": ENTERPRISE_USER_URN, "required": False}],
        "meta": {"resourceType": "ResourceType", "location": f"{BASE}/ResourceTypes/User"},
    }
    assert (group["id"], group["endpoint"], group["schema"], group["schemaExtensions"]) == (
        "Group",
        "/Groups",
        GROUP_URN,
        [],
    )
    assert group["meta"] == {"resourceType": "ResourceType", "location": f"{BASE}/ResourceTypes/Group"}


@pytest.mark.parametrize(("id_", "name"), [("User", "User"), ("user", "User"), ("GROUP", "Group")])
def test_resource_type_by_id_ignores_case(id_: str, name: str) -> None:
    body = discovery.resource_type_by_id(BASE + "/", id_)
    assert body is not None and body["id"] == name
    assert body["meta"]["location"] == f"{BASE}/ResourceTypes/{name}"


@pytest.mark.parametrize("id_", ["Users", "", "Schema", USER_URN])
def test_resource_type_by_unknown_id_is_none(id_: str) -> None:
    assert discovery.resource_type_by_id(BASE, id_) is None


# --- ServiceProviderConfig (RFC 7643 §5) -------------------------------------------


def test_service_provider_config() -> None:
    body = spc()
    assert body["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert body["patch"] == {"supported": True}
    assert body["bulk"] == {"supported": False, "maxOperations": 0, "maxPayloadSize": 0}
    assert body["filter"] == {"supported": True, "maxResults": 200}
    assert body["changePassword"] == {"supported": False}
    assert body["sort"] == {"supported": True}
    assert body["etag"] == {"supported": True}
    assert body["authenticationSchemes"] == [
        {
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with the tenant's Secret Token sent as a bearer token.",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": True,
        }
    ]
    assert body["meta"] == {"resourceType": "ServiceProviderConfig", "location": f"{BASE}/ServiceProviderConfig"}
    assert "documentationUri" not in body


def test_service_provider_config_reports_the_given_max_results() -> None:
    body = discovery.service_provider_config(BASE + "/", max_operations=1, max_payload_size=1, max_results=7)
    assert body["filter"]["maxResults"] == 7
    assert body["meta"]["location"] == f"{BASE}/ServiceProviderConfig"
