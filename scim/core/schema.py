"""The SCIM attribute registry: the schemas this service serves (RFC 7643).

Each attribute carries the characteristics of RFC 7643 §2.2 (type, multiValued,
required, caseExact, mutability, returned, uniqueness, canonicalValues,
referenceTypes). The definitions follow the schema representation of RFC 7643 §8.7.1
for the User (§4.1), Group (§4.2) and Enterprise User (§4.3) schemas, with two
deliberate departures, both for Entra ID provisioning:

- Group ``displayName`` is required and unique (``uniqueness: server``): the service
  answers 409 to a duplicate group name.
- Group ``members`` has a read-only ``display`` sub-attribute, which the service fills
  in responses.

The common attributes ``id``, ``externalId`` and ``meta`` (RFC 7643 §3.1) belong to no
schema; they are in :data:`COMMON_ATTRIBUTES`, and :meth:`ResourceType.attribute`
finds them as if they were core attributes. Every lookup is case-insensitive
(RFC 7643 §2.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scim.store.base import ResourceKind

__all__ = [
    "COMMON_ATTRIBUTES",
    "ENTERPRISE_USER_SCHEMA",
    "ENTERPRISE_USER_URN",
    "GROUP",
    "GROUP_SCHEMA",
    "GROUP_URN",
    "RESOURCE_TYPES",
    "SCHEMAS",
    "SCHEMA_URN",
    "USER",
    "USER_SCHEMA",
    "USER_URN",
    "Attribute",
    "ResourceType",
    "Schema",
]

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCHEMA_URN = "urn:ietf:params:scim:schemas:core:2.0:Schema"


@dataclass(frozen=True)
class Attribute:
    """An attribute definition and its characteristics (RFC 7643 §2.2, §7)."""

    name: str
    type: str
    multi_valued: bool = False
    description: str = ""
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    sub_attributes: tuple[Attribute, ...] = field(default=(), repr=False)
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()

    def sub(self, name: str) -> Attribute | None:
        """The sub-attribute called ``name``, in any case, or None."""
        return _find(self.sub_attributes, name)

    def to_json(self) -> dict[str, Any]:
        """The attribute definition as served by ``/Schemas`` (RFC 7643 §7).

        Empty ``canonicalValues``, ``referenceTypes`` and ``subAttributes`` are
        omitted; nothing is ever None.
        """
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability,
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        }
        if self.canonical_values:
            body["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            body["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            body["subAttributes"] = [sub.to_json() for sub in self.sub_attributes]
        return body


@dataclass(frozen=True)
class Schema:
    """A schema resource: a URN and its attributes (RFC 7643 §7)."""

    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...] = field(repr=False)

    def attribute(self, name: str) -> Attribute | None:
        """The top-level attribute called ``name``, in any case, or None."""
        return _find(self.attributes, name)

    def to_json(self, location_base: str) -> dict[str, Any]:
        """The schema resource served at ``{location_base}/Schemas/{id}`` (RFC 7643 §7)."""
        return {
            "schemas": [SCHEMA_URN],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [attribute.to_json() for attribute in self.attributes],
            "meta": {
                "resourceType": "Schema",
                "location": f"{location_base.rstrip('/')}/Schemas/{self.id}",
            },
        }


@dataclass(frozen=True)
class ResourceType:
    """A resource type: endpoint, core schema and extensions (RFC 7643 §6)."""

    name: ResourceKind
    endpoint: str
    schema: Schema
    extensions: tuple[tuple[Schema, bool], ...] = ()
    indexed: tuple[str, ...] = ()
    """The attribute paths the store indexes, so that Entra's lookups (docs/ENTRA.md §2) are
    point reads or range queries instead of scans: ``userName``, ``emails.value``, ... The one
    place this is written; :func:`scim.core.resource.index_terms` and the filter planner
    (:func:`scim.core.lookup.plan_lookup`) read it, with each attribute's ``caseExact``."""
    unique: tuple[str, ...] = ()
    """The indexed paths that are unique per tenant (409 ``uniqueness`` on a second one)."""

    def mutability_of(self, name: str) -> str | None:
        """The ``mutability`` (RFC 7643 §2.2) of a top-level attribute of the core schema or the
        common attributes (``id``, ``meta``), or None for a name the schema does not define.
        The one place requests learn which attributes they may not write."""
        found = self.attribute(name) if ":" not in name else None
        return found[1].mutability if found is not None else None

    def indexed_attribute(self, path: str) -> Attribute:
        """The definition of an indexed path (``emails.value``: the ``value`` sub-attribute)."""
        name, _, sub = path.partition(".")
        found = self.attribute(name)
        attribute = found[1] if found is not None else None
        if attribute is not None and sub:
            attribute = attribute.sub(sub)
        if attribute is None:
            raise LookupError(f"{self.name} indexes {path!r}, which its schema does not define")
        return attribute

    def schema_for_urn(self, urn: str) -> Schema | None:
        """The core or extension schema whose URN is ``urn``, in any case, or None."""
        wanted = urn.casefold()
        for schema in (self.schema, *(extension for extension, _ in self.extensions)):
            if schema.id.casefold() == wanted:
                return schema
        return None

    def attribute(self, name: str) -> tuple[Schema, Attribute] | None:
        """Resolve a top-level attribute name to its schema and definition.

        A bare name (``userName``) is looked up in the core schema and the common
        attributes; a URN-qualified name (``urn:…:enterprise:2.0:User:manager``) in
        the schema of that URN (RFC 7644 §3.10). Case is ignored throughout. A
        sub-attribute path (``name.givenName``) is not resolved: split it first and
        use :meth:`Attribute.sub`.
        """
        if ":" in name:
            urn, _, name = name.rpartition(":")
            schema = self.schema_for_urn(urn)
        else:
            schema = self.schema
        if schema is None:
            return None
        found = schema.attribute(name)
        if found is None and schema is self.schema:
            found = _find(COMMON_ATTRIBUTES, name)
        return (schema, found) if found is not None else None


def _find(attributes: tuple[Attribute, ...], name: str) -> Attribute | None:
    wanted = name.casefold()
    return next((a for a in attributes if a.name.casefold() == wanted), None)


# --- Building blocks -------------------------------------------------------------


def _string(name: str, description: str, **characteristics: Any) -> Attribute:
    return Attribute(name, "string", description=description, **characteristics)


def _complex(name: str, description: str, *subs: Attribute, **characteristics: Any) -> Attribute:
    return Attribute(name, "complex", description=description, sub_attributes=subs, **characteristics)


def _read_only(attribute: Attribute) -> Attribute:
    """The same attribute, read-only, with its sub-attributes read-only too."""
    subs = tuple(_read_only(sub) for sub in attribute.sub_attributes)
    return replace(attribute, mutability="readOnly", sub_attributes=subs)


_DISPLAY = _string("display", "A human-readable name, primarily used for display purposes.")
_PRIMARY = Attribute(
    "primary",
    "boolean",
    description="Whether this is the primary or preferred value of the attribute. "
    "The value true appears no more than once.",
)


def _type(*canonical: str, example: str = "'work' or 'home'") -> Attribute:
    description = f"A label indicating the attribute's function, e.g., {example}."
    return _string("type", description, canonical_values=canonical)


def _multi_valued(
    name: str,
    description: str,
    value: Attribute,
    types: tuple[str, ...] = (),
) -> Attribute:
    """A multi-valued complex attribute with the sub-attributes value, display,
    type and primary of RFC 7643 §2.4, ``types`` being the canonical types."""
    return _complex(
        name,
        description,
        value,
        _DISPLAY,
        _type(*types),
        _PRIMARY,
        multi_valued=True,
    )


def _value(description: str, type: str = "string", **characteristics: Any) -> Attribute:
    return Attribute("value", type, description=description, **characteristics)


# --- Common attributes (RFC 7643 §3.1) ---------------------------------------------

COMMON_ATTRIBUTES: tuple[Attribute, ...] = (
    _string(
        "id",
        "A unique identifier for a SCIM resource, as defined by the service provider.",
        case_exact=True,
        mutability="readOnly",
        returned="always",
        uniqueness="server",
    ),
    _string(
        "externalId",
        "An identifier for the resource as defined by the provisioning client.",
        case_exact=True,
    ),
    _read_only(
        _complex(
            "meta",
            "A complex attribute containing resource metadata.",
            _string("resourceType", "The name of the resource type of the resource.", case_exact=True),
            Attribute("created", "dateTime", description="When the resource was added."),
            Attribute("lastModified", "dateTime", description="When the resource was last updated."),
            Attribute(
                "location",
                "reference",
                description="The URI of the resource being returned.",
                case_exact=True,
                reference_types=("uri",),
            ),
            _string("version", "The version (ETag) of the resource.", case_exact=True),
        )
    ),
)

# --- User (RFC 7643 §4.1, §8.7.1) ----------------------------------------------------

_NAME = _complex(
    "name",
    "The components of the user's real name.",
    _string("formatted", "The full name, formatted for display (e.g., 'Ms. Barbara J Jensen, III')."),
    _string("familyName", "The family name of the User, or last name (e.g., 'Jensen')."),
    _string("givenName", "The given name of the User, or first name (e.g., 'Barbara')."),
    _string("middleName", "The middle name(s) of the User (e.g., 'Jane')."),
    _string("honorificPrefix", "The honorific prefix(es) of the User, or title (e.g., 'Ms.')."),
    _string("honorificSuffix", "The honorific suffix(es) of the User, or suffix (e.g., 'III')."),
)

_ADDRESSES = _complex(
    "addresses",
    "A physical mailing address for this User. Canonical type values of 'work', 'home' and 'other'.",
    _string("formatted", "The full mailing address, formatted for display."),
    _string("streetAddress", "The full street address component."),
    _string("locality", "The city or locality component."),
    _string("region", "The state or region component."),
    _string("postalCode", "The zip code or postal code component."),
    _string("country", "The country name component (ISO 3166-1 alpha-2)."),
    _type("work", "home", "other"),
    _PRIMARY,
    multi_valued=True,
)

_GROUPS = _read_only(
    _complex(
        "groups",
        "A list of groups to which the user belongs, either through direct membership, "
        "through nested groups, or dynamically calculated.",
        _value("The identifier of the User's group."),
        Attribute(
            "$ref",
            "reference",
            description="The URI of the corresponding 'Group' resource to which the user belongs.",
            reference_types=("User", "Group"),
        ),
        _DISPLAY,
        _type("direct", "indirect", example="'direct' or 'indirect'"),
        multi_valued=True,
    )
)

USER_SCHEMA = Schema(
    id=USER_URN,
    name="User",
    description="User Account",
    attributes=(
        _string(
            "userName",
            "Unique identifier for the User, typically used by the user to directly "
            "authenticate to the service provider. REQUIRED.",
            required=True,
            uniqueness="server",
        ),
        _NAME,
        _string("displayName", "The name of the User, suitable for display to end-users."),
        _string("nickName", "The casual way to address the user, e.g., 'Bob' for 'Robert'."),
        Attribute(
            "profileUrl",
            "reference",
            description="A fully qualified URL of a page representing the User's online profile.",
            reference_types=("external",),
        ),
        _string("title", "The user's title, such as 'Vice President'."),
        _string("userType", "The relationship between the organization and the user, e.g., 'Employee'."),
        _string("preferredLanguage", "The User's preferred written or spoken language, e.g., 'en-US'."),
        _string("locale", "The User's default location for localization, e.g., 'en-US'."),
        _string("timezone", "The User's time zone in the 'Olson' format, e.g., 'America/Los_Angeles'."),
        Attribute("active", "boolean", description="The User's administrative status."),
        _string(
            "password",
            "The User's cleartext password, used to set or compare it. Never returned.",
            mutability="writeOnly",
            returned="never",
        ),
        _multi_valued(
            "emails",
            "Email addresses for the user. Canonical type values of 'work', 'home' and 'other'.",
            _value("Email addresses for the user."),
            ("work", "home", "other"),
        ),
        _multi_valued(
            "phoneNumbers",
            "Phone numbers for the User. Canonical type values of 'work', 'home', 'mobile', "
            "'fax', 'pager' and 'other'.",
            _value("Phone number of the User."),
            ("work", "home", "mobile", "fax", "pager", "other"),
        ),
        _multi_valued(
            "ims",
            "Instant messaging addresses for the User.",
            _value("Instant messaging address for the User."),
            ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"),
        ),
        _multi_valued(
            "photos",
            "URLs of photos of the User.",
            _value("URL of a photo of the User.", "reference", reference_types=("external",)),
            ("photo", "thumbnail"),
        ),
        _ADDRESSES,
        _GROUPS,
        _multi_valued(
            "entitlements",
            "A list of entitlements for the User that represent a thing the User has.",
            _value("The value of an entitlement."),
        ),
        _multi_valued(
            "roles",
            "A list of roles for the User that collectively represent who the User is, e.g., 'Student'.",
            _value("The value of a role."),
        ),
        _multi_valued(
            "x509Certificates",
            "A list of certificates issued to the User.",
            _value("The value of an X.509 certificate.", "binary"),
        ),
    ),
)

# --- Enterprise User extension (RFC 7643 §4.3, §8.7.1) ----------------------------

ENTERPRISE_USER_SCHEMA = Schema(
    id=ENTERPRISE_USER_URN,
    name="EnterpriseUser",
    description="Enterprise User",
    attributes=(
        _string(
            "employeeNumber",
            "Numeric or alphanumeric identifier assigned to a person, typically based on "
            "order of hire or association with an organization.",
        ),
        _string("costCenter", "Identifies the name of a cost center."),
        _string("organization", "Identifies the name of an organization."),
        _string("division", "Identifies the name of a division."),
        _string("department", "Identifies the name of a department."),
        _complex(
            "manager",
            "The User's manager, referencing the 'id' attribute of another User.",
            _value("The id of the SCIM resource representing the User's manager."),
            Attribute(
                "$ref",
                "reference",
                description="The URI of the SCIM resource representing the User's manager.",
                reference_types=("User",),
            ),
            _string(
                "displayName",
                "The displayName of the User's manager. READ-ONLY.",
                mutability="readOnly",
            ),
        ),
    ),
)

# --- Group (RFC 7643 §4.2, §8.7.1) --------------------------------------------------

GROUP_SCHEMA = Schema(
    id=GROUP_URN,
    name="Group",
    description="Group",
    attributes=(
        _string(
            "displayName",
            "A human-readable name for the Group. REQUIRED and unique.",
            required=True,
            uniqueness="server",
        ),
        _complex(
            "members",
            "A list of members of the Group.",
            _value("Identifier of the member of this Group.", mutability="immutable"),
            Attribute(
                "$ref",
                "reference",
                description="The URI corresponding to a SCIM resource that is a member of this Group.",
                mutability="immutable",
                reference_types=("User", "Group"),
            ),
            _string(
                "type",
                "A label indicating the type of resource, e.g., 'User' or 'Group'.",
                mutability="immutable",
                canonical_values=("User", "Group"),
            ),
            _string("display", "A human-readable name of the member. READ-ONLY.", mutability="readOnly"),
            multi_valued=True,
        ),
    ),
)

# --- Resource types (RFC 7643 §6) ---------------------------------------------------

USER = ResourceType(
    "User",
    "/Users",
    USER_SCHEMA,
    ((ENTERPRISE_USER_SCHEMA, False),),
    indexed=("userName", "externalId", "displayName", "emails.value"),
    unique=("userName",),
)
GROUP = ResourceType("Group", "/Groups", GROUP_SCHEMA, indexed=("displayName", "externalId"), unique=("displayName",))

RESOURCE_TYPES: dict[str, ResourceType] = {"User": USER, "Group": GROUP}
SCHEMAS: dict[str, Schema] = {schema.id: schema for schema in (USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_USER_SCHEMA)}
