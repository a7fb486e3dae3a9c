"""SCIM 2.0 resources as JSON (RFC 7643): parsing request bodies, rendering resources, the
`eq` filter and PATCH operations (RFC 7644 §3.4.2.2, §3.5.2). Pure functions on dicts: nothing
here writes; views call approvals.services.scim with what these return.

Every malformed input raises ScimError, which the views answer with a SCIM error body.
"""

import json
import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from approvals.services.scim import ScimGroupData, ScimUserData

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"

MAX_STRING = 255  # the longest userName / externalId / name the portal keeps
MAX_EMAILS = 10
MAX_MEMBERS = 10_000
MAX_OPERATIONS = 1_000
# Values the filtered operations of one PATCH (members[value eq "x"]) may read in all.
MAX_FILTERED_READS = 200_000
MAX_LIST_COUNT = 200


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str = ""):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def body(self) -> dict:
        body = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


def invalid(detail: str, scim_type: str = "invalidValue") -> ScimError:
    return ScimError(400, detail, scim_type)


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid("The body is not JSON.", "invalidSyntax") from None
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object.", "invalidSyntax")
    return body


def _lower_keys(body: dict) -> dict:
    # Attribute names are case-insensitive (RFC 7643 §2.1).
    return {key.lower(): value for key, value in body.items() if isinstance(key, str)}


def _string(value, name: str, *, required: bool = False, limit: int = MAX_STRING) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string.")
    value = value.strip()
    if "\x00" in value:
        raise invalid(f"{name} contains a NUL character.")
    if required and not value:
        raise invalid(f"{name} is required.")
    if len(value) > limit:
        raise invalid(f"{name} is longer than {limit} characters.")
    return value


def _boolean(value, name: str) -> bool:
    # Entra ID has sent "True"/"False" as strings in PATCH values.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise invalid(f"{name} must be a boolean.")


def _email(value: str) -> str:
    value = value.strip().lower()
    try:
        validate_email(value)
    except ValidationError:
        raise invalid("emails.value must be an email address.") from None
    return value


def parse_user(body: dict) -> ScimUserData:
    """A User body (POST/PUT, or a PATCH's result) → what the portal keeps. Unknown attributes and
    extensions are ignored: nothing in a SCIM body makes anyone staff, superuser or a member."""
    fields = _lower_keys(body)
    schemas = fields.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or USER_SCHEMA not in schemas):
        raise invalid(f"schemas must include {USER_SCHEMA}.", "invalidSyntax")
    user_name = _string(fields.get("username"), "userName", required=True)
    external_id = _string(fields.get("externalid"), "externalId")
    display_name = _string(fields.get("displayname"), "displayName")
    name = fields.get("name")
    kept_name = {}
    if name is not None:
        if not isinstance(name, dict):
            raise invalid("name must be an object.")
        name = _lower_keys(name)
        for key, label in (("givenname", "givenName"), ("familyname", "familyName"), ("formatted", "formatted")):
            value = _string(name.get(key), f"name.{label}")
            if value:
                kept_name[label] = value
    emails = fields.get("emails")
    kept_emails = []
    if emails is not None:
        if not isinstance(emails, list) or len(emails) > MAX_EMAILS:
            raise invalid(f"emails must be a list of at most {MAX_EMAILS}.")
        for item in emails:
            if not isinstance(item, dict):
                raise invalid("Each of emails must be an object.")
            item = _lower_keys(item)
            entry = {"value": _email(_string(item.get("value"), "emails.value", required=True))}
            if item.get("type") is not None:
                entry["type"] = _string(item.get("type"), "emails.type", limit=32)
            if item.get("primary") is not None:
                entry["primary"] = _boolean(item.get("primary"), "emails.primary")
            kept_emails.append(entry)
        if sum(1 for entry in kept_emails if entry.get("primary")) > 1:
            raise invalid("At most one email is primary.")
    # Absent: true for a new account, unchanged for an existing one (a PUT that leaves it out
    # must not reactivate a deprovisioned account).
    active = None if fields.get("active") is None else _boolean(fields.get("active"), "active")
    primary = next((e["value"] for e in kept_emails if e.get("primary")), None)
    work = next((e["value"] for e in kept_emails if e.get("type") == "work"), None)
    email = primary or work or (kept_emails[0]["value"] if kept_emails else "")
    if not email and "@" in user_name:
        try:
            email = _email(user_name)
        except ScimError:
            email = ""
    attributes = {}
    if kept_name:
        attributes["name"] = kept_name
    if display_name:
        attributes["displayName"] = display_name
    if kept_emails:
        attributes["emails"] = kept_emails
    return ScimUserData(
        user_name=user_name,
        external_id=external_id,
        given_name=kept_name.get("givenName", ""),
        family_name=kept_name.get("familyName", ""),
        display_name=display_name,
        email=email,
        active=active,
        attributes=attributes,
    )


def parse_group(body: dict) -> ScimGroupData:
    fields = _lower_keys(body)
    schemas = fields.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or GROUP_SCHEMA not in schemas):
        raise invalid(f"schemas must include {GROUP_SCHEMA}.", "invalidSyntax")
    display_name = _string(fields.get("displayname"), "displayName", required=True, limit=150)
    external_id = _string(fields.get("externalid"), "externalId")
    members = fields.get("members")
    values = None
    if members is not None:
        if not isinstance(members, list) or len(members) > MAX_MEMBERS:
            raise invalid(f"members must be a list of at most {MAX_MEMBERS}.")
        values = []
        for item in members:
            if not isinstance(item, dict):
                raise invalid("Each of members must be an object.")
            values.append(_string(_lower_keys(item).get("value"), "members.value", required=True, limit=64))
        values = tuple(dict.fromkeys(values))
    return ScimGroupData(display_name=display_name, external_id=external_id, members=values)


# --- Filters ------------------------------------------------------------------------------

_FILTER = re.compile(r'^\s*([A-Za-z][\w.$]*)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


def parse_filter(text: str, allowed: dict[str, str]) -> tuple[str, str] | None:
    """`attribute eq "value"` → (the attribute's canonical name, value). Only `eq` on the
    attributes in `allowed` (lower-cased name → canonical name); anything else is invalidFilter."""
    if text is None or text == "":
        return None
    if len(text) > 1000:
        raise invalid("The filter is too long.", "invalidFilter")
    match = _FILTER.match(text)
    if match is None:
        raise invalid('Only filters of the form attribute eq "value" are supported.', "invalidFilter")
    attribute = allowed.get(match.group(1).lower())
    if attribute is None:
        raise invalid(f"Filtering on {match.group(1)[:64]} is not supported.", "invalidFilter")
    try:
        value = json.loads(f'"{match.group(2)}"')
    except ValueError:
        raise invalid("The filter's value is not a valid string.", "invalidFilter") from None
    if "\x00" in value or len(value) > MAX_STRING:
        raise invalid("The filter's value is not valid.", "invalidFilter")
    return attribute, value


# --- Attribute selection (attributes / excludedAttributes) ---------------------------------

ALWAYS_RETURNED = {"id", "schemas"}


def _names(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        parts = value
    elif isinstance(value, str):
        parts = value.split(",")
    else:
        raise invalid("attributes must be a comma-separated list.")
    names = []
    for part in parts:
        if not isinstance(part, str):
            raise invalid("attributes must be strings.")
        part = part.strip()
        for schema in (USER_SCHEMA, GROUP_SCHEMA):
            if part.lower().startswith(schema.lower() + ":"):
                part = part[len(schema) + 1 :]
        if part:
            names.append(part.lower())
    return names


def select(resource: dict, *, attributes=None, excluded=None) -> dict:
    """RFC 7644 §3.4.2.5: only `attributes` (plus those always returned), or all but `excluded`."""
    wanted, unwanted = _names(attributes), _names(excluded)
    if not wanted and not unwanted:
        return resource
    result = {}
    for key, value in resource.items():
        lower = key.lower()
        if lower in ALWAYS_RETURNED:
            result[key] = value
        elif wanted:
            subs = [name.split(".", 1)[1] for name in wanted if name.startswith(lower + ".")]
            if lower in wanted:
                result[key] = value
            elif subs and isinstance(value, dict):
                result[key] = {k: v for k, v in value.items() if k.lower() in subs}
            elif subs and isinstance(value, list):
                result[key] = [{k: v for k, v in item.items() if k.lower() in subs} for item in value]
        elif lower not in unwanted:
            if isinstance(value, dict):
                subs = {name.split(".", 1)[1] for name in unwanted if name.startswith(lower + ".")}
                value = {k: v for k, v in value.items() if k.lower() not in subs}
            result[key] = value
    return result


# --- PATCH ----------------------------------------------------------------------------------

_PATH = re.compile(
    r'^(?P<attr>[A-Za-z][\w$]*)(?:\[(?P<sub>[A-Za-z][\w$]*)\s+eq\s+"(?P<value>(?:[^"\\]|\\.)*)"\])?(?:\.(?P<subattr>[A-Za-z][\w$]*))?$',
    re.IGNORECASE,
)


def _key(resource: dict, name: str) -> str:
    """The resource's own spelling of an attribute name (case-insensitive match)."""
    return next((key for key in resource if key.lower() == name.lower()), name)


def _strip_schema(path: str, schema: str) -> str:
    if path.lower().startswith(schema.lower() + ":"):
        return path[len(schema) + 1 :]
    return path


def apply_patch(resource: dict, body: dict, *, schema: str, required: set[str]) -> dict:
    """The resource after the PatchOp `body` (RFC 7644 §3.5.2), as a new dict to validate again.

    `required`: lower-cased attributes that cannot be removed (mutability error).
    """
    fields = _lower_keys(body)
    schemas = fields.get("schemas")
    if not isinstance(schemas, list) or PATCH_SCHEMA not in schemas:
        raise invalid(f"schemas must be [{PATCH_SCHEMA}].", "invalidSyntax")
    operations = fields.get("operations")
    if not isinstance(operations, list) or not operations or len(operations) > MAX_OPERATIONS:
        raise invalid(f"Operations must be a list of 1 to {MAX_OPERATIONS} operations.", "invalidSyntax")
    resource = json.loads(json.dumps(resource))
    filtered_reads = 0
    for operation in operations:
        if not isinstance(operation, dict):
            raise invalid("Each operation must be an object.", "invalidSyntax")
        operation = _lower_keys(operation)
        op = operation.get("op")
        if not isinstance(op, str) or op.lower() not in {"add", "remove", "replace"}:
            raise invalid("op must be add, remove or replace.", "invalidSyntax")
        op = op.lower()
        path = operation.get("path")
        value = operation.get("value")
        if path is None or path == "":
            if op == "remove":
                raise invalid("remove needs a path.", "noTarget")
            if not isinstance(value, dict):
                raise invalid("Without a path, value must be an object.", "invalidValue")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise invalid("Attribute names must be strings.", "invalidPath")
                _apply(resource, op, _strip_schema(key, schema), item, required)
            continue
        if not isinstance(path, str) or len(path) > 300:
            raise invalid("path must be a string.", "invalidPath")
        if op != "remove" and "value" not in operation:
            raise invalid(f"{op} needs a value.", "invalidValue")
        path = _strip_schema(path.strip(), schema)
        if "[" in path:  # a filter reads every value of its attribute
            values = resource.get(_key(resource, path.split("[", 1)[0]))
            filtered_reads += len(values) if isinstance(values, list) else 0
            if filtered_reads > MAX_FILTERED_READS:
                raise invalid(
                    f"The operations' filters would read more than {MAX_FILTERED_READS:,} values: "
                    "send fewer operations per request, or members as a value list.",
                    "invalidSyntax",
                )
        _apply(resource, op, path, value, required)
    return resource


def _matches(item, sub: str, wanted: str) -> bool:
    if not isinstance(item, dict):
        return False
    actual = item.get(_key(item, sub))
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    return isinstance(actual, str) and actual.lower() == wanted.lower()


def _apply(resource: dict, op: str, path: str, value, required: set[str]) -> None:  # noqa: C901 (one grammar)
    match = _PATH.match(path)
    if match is None:
        raise invalid(f"Unsupported path: {path[:80]}", "invalidPath")
    attr, sub, wanted, subattr = match.group("attr"), match.group("sub"), match.group("value"), match.group("subattr")
    key = _key(resource, attr)
    if attr.lower() in {"id", "meta", "schemas"}:
        raise invalid(f"{attr} cannot be changed.", "mutability")
    if sub is not None:
        try:
            wanted = json.loads(f'"{wanted}"')
        except ValueError:
            raise invalid("The path's filter value is not a valid string.", "invalidPath") from None
        items = resource.get(key)
        if not isinstance(items, list):
            items = []
        hits = [item for item in items if _matches(item, sub, wanted)]
        if op == "remove":
            if subattr is None:
                resource[key] = [item for item in items if not _matches(item, sub, wanted)]
            else:
                for item in hits:
                    item.pop(_key(item, subattr), None)
            return
        if not hits:
            if op == "replace" and subattr is None:
                raise invalid("No value matches the path's filter.", "noTarget")
            # Entra ID's `emails[type eq "work"].value` on a user without a work email: add it.
            hits = [{_key({}, sub): wanted}]
            items.append(hits[0])
            resource[key] = items
        for item in hits:
            if subattr is None:
                if not isinstance(value, dict):
                    raise invalid("The value must be an object.", "invalidValue")
                item.update(value)
            else:
                item[_key(item, subattr)] = value
        return
    if subattr is not None:
        parent = resource.get(key)
        if parent is None:
            parent = {}
        if not isinstance(parent, dict):
            raise invalid(f"{attr} has no sub-attributes.", "invalidPath")
        sub_key = _key(parent, subattr)
        if op == "remove":
            parent.pop(sub_key, None)
        else:
            parent[sub_key] = value
        resource[key] = parent
        return
    if op == "remove":
        if attr.lower() in required:
            raise invalid(f"{attr} is required and cannot be removed.", "mutability")
        if isinstance(resource.get(key), list) and isinstance(value, list):
            # Entra ID: remove members given as a value list.
            drop = {str(_lower_keys(item).get("value")) for item in value if isinstance(item, dict)}
            resource[key] = [item for item in resource[key] if str(_lower_keys(item).get("value")) not in drop]
        elif isinstance(resource.get(key), list):
            resource[key] = []  # every value (an absent list would mean "unchanged" to a group)
        else:
            resource.pop(key, None)
        return
    if op == "add" and isinstance(resource.get(key), list):
        additions = value if isinstance(value, list) else [value]
        existing = resource[key]
        # Compared by their JSON, once each: `item not in existing` was quadratic.
        seen = {json.dumps(item, sort_keys=True) for item in existing}
        for item in additions:
            text = json.dumps(item, sort_keys=True)
            if text not in seen:
                seen.add(text)
                existing.append(item)
        return
    if op == "add" and isinstance(resource.get(key), dict) and isinstance(value, dict):
        resource[key].update(value)
        return
    resource[key] = value
