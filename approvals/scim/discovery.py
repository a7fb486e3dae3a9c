"""What the service provider declares (RFC 7643 §5-7): its configuration, resource types and
the schemas of the attributes the portal keeps. Nothing else is declared, so no client sends
attributes the portal would drop silently."""

from approvals.scim.resources import GROUP_SCHEMA, USER_SCHEMA

SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
MAX_RESULTS = 200


def _attribute(name: str, *, type_: str = "string", multi: bool = False, required: bool = False, **extra) -> dict:
    attribute = {
        "name": name,
        "type": type_,
        "multiValued": multi,
        "description": extra.pop("description", name),
        "required": required,
        "caseExact": extra.pop("caseExact", False),
        "mutability": extra.pop("mutability", "readWrite"),
        "returned": extra.pop("returned", "default"),
        "uniqueness": extra.pop("uniqueness", "none"),
    }
    attribute.update(extra)
    return attribute


USER_ATTRIBUTES = [
    _attribute(
        "userName",
        required=True,
        uniqueness="server",
        description="Unique per IdP; usually the sign-in name or email.",
    ),
    _attribute(
        "name",
        type_="complex",
        description="The person's name.",
        subAttributes=[_attribute("givenName"), _attribute("familyName"), _attribute("formatted")],
    ),
    _attribute("displayName", description="The name shown to people."),
    _attribute(
        "emails",
        type_="complex",
        multi=True,
        description="The primary (else the work, else the first) email is the portal account's email.",
        subAttributes=[
            _attribute("value"),
            _attribute("type", canonicalValues=["work", "home", "other"]),
            _attribute("primary", type_="boolean"),
        ],
    ),
    # Required: deprovisioning turns on it, so it is never left unsaid (absent on create = true).
    _attribute("active", type_="boolean", required=True, description="false deactivates the account now."),
]

GROUP_ATTRIBUTES = [
    _attribute(
        "displayName",
        required=True,
        uniqueness="server",
        description="The group's name, as assignments and the ID token's groups claim name it.",
    ),
    _attribute(
        "members",
        type_="complex",
        multi=True,
        description="Provisioned users of this IdP.",
        subAttributes=[
            _attribute("value", mutability="immutable", caseExact=True),
            _attribute("$ref", type_="reference", mutability="immutable", referenceTypes=["User"], caseExact=True),
        ],
    ),
]


def service_provider_config(base: str) -> dict:
    return {
        "schemas": [SPC_SCHEMA],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A token an admin creates in the portal's admin (SCIM tokens).",
                "primary": True,
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base}/ServiceProviderConfig"},
    }


def resource_types(base: str) -> list[dict]:
    return [
        {
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": name,
            "name": name,
            "endpoint": f"/{name}s",
            "description": f"{name}s provisioned by the company's IdP",
            "schema": schema,
            "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/{name}"},
        }
        for name, schema in (("User", USER_SCHEMA), ("Group", GROUP_SCHEMA))
    ]


def schemas(base: str) -> list[dict]:
    return [
        {
            "schemas": [SCHEMA_SCHEMA],
            "id": urn,
            "name": name,
            "description": f"{name} (the attributes the portal keeps)",
            "attributes": attributes,
            "meta": {"resourceType": "Schema", "location": f"{base}/Schemas/{urn}"},
        }
        for urn, name, attributes in (
            (USER_SCHEMA, "User", USER_ATTRIBUTES),
            (GROUP_SCHEMA, "Group", GROUP_ATTRIBUTES),
        )
    ]
