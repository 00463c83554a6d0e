"""Check Pods and ConfigMaps against the real API schemas, answering as the API server does.

The schemas are kubernetes-validate's strict ones (unknown fields are errors) for the newest
Kubernetes version that package ships. jsonschema decides what is wrong; this module only
words it the way kube-apiserver does:

- a value of the wrong type fails decoding: 400 BadRequest, `Pod in version "v1" cannot be
  handled as a Pod: json: cannot unmarshal string into Go struct field
  PodSpec.spec.terminationGracePeriodSeconds of type int64`;
- unknown fields fail strict decoding (fieldValidation=Strict, what kubectl sends): 400,
  `... cannot be handled as a Pod: strict decoding error: unknown field "spec.foo"`;
  with fieldValidation=Warn they are dropped and reported as `Warning` headers, with
  Ignore dropped silently. A request without the parameter is treated as Strict (the
  API server's own default is Warn; the lab is stricter so a client bug cannot hide);
- a missing required field or a value outside an enum: 422 Invalid with causes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .store import ApiError, Obj

#: What the API server checks here (the lab validates only these kinds).
KINDS = {"pods": ("Pod", "v1"), "configmaps": ("ConfigMap", "v1")}

Path = Tuple[Any, ...]
Cause = Tuple[str, str, str]  # (field, reason, message): what core.invalid() turns into a 422


class SchemaUnavailable(RuntimeError):
    """kubernetes-validate is missing: the lab cannot check objects."""


def _field(path: Path) -> str:
    """`spec.containers[0].image`: the API server's field path."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _json_kind(value: Any) -> str:
    """How Go's encoding/json names the JSON value it could not decode."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number" if float(value).is_integer() else f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Schemas:
    """The strict schemas of one Kubernetes version, loaded once per lab daemon."""

    def __init__(self) -> None:
        try:
            import jsonschema
            import referencing
            from kubernetes_validate import utils
        except ImportError as exc:
            raise SchemaUnavailable(
                "kubernetes-validate is not installed; run tests/bootstrap (it installs the "
                "dev extra)") from exc
        self.version = utils.latest_version()
        folder = f"kubernetes-json-schema/v{self.version}-local-strict"
        self.definitions: Dict[str, Any] = utils.schema_contents(
            f"{folder}/_definitions.json", self.version)
        self.defs: Dict[str, Any] = self.definitions["$defs"]
        self.roots: Dict[str, Any] = {}
        self.validators: Dict[str, Any] = {}
        registry: Any = referencing.Registry().with_resource(
            self.definitions["$id"], referencing.Resource.from_contents(self.definitions))
        for kind, version in KINDS.values():
            root = utils.schema_contents(f"{folder}/{kind.lower()}-{version}.json",
                                         self.version)
            self.roots[kind] = root
            self.validators[kind] = jsonschema.Draft202012Validator(
                root, registry=registry.with_resource(
                    root["$id"], referencing.Resource.from_contents(root)))

    # ------------------------------------------------------------ schema walking

    def _resolve(self, schema: Any) -> Tuple[Any, str]:
        """Follow a $ref: (schema, definition name or "")."""
        ref = schema.get("$ref", "") if isinstance(schema, dict) else ""
        if "#/$defs/" in ref:
            name = ref.split("#/$defs/", 1)[1]
            return self.defs[name], name
        return schema, ""

    def _go_type(self, schema: Any) -> str:
        schema, name = self._resolve(schema)
        if name:
            short = name.rsplit(".", 1)[-1]
            package = name.rsplit(".", 2)[-2]
            if short in ("Quantity", "IntOrString"):
                return f"{package}.{short}"
            if schema.get("type") in ("object", ["object", "null"]) or "properties" in schema:
                return f"{package}.{short}"
        types = schema.get("type") if isinstance(schema, dict) else None
        kind = [t for t in (types if isinstance(types, list) else [types]) if t != "null"]
        first = kind[0] if kind else ""
        if first == "integer":
            return str(schema.get("format") or "int64")
        if first == "number":
            return "float64"
        if first == "boolean":
            return "bool"
        if first == "array":
            return "[]" + self._go_type(schema.get("items", {}))
        if first == "object":
            return "map[string]" + self._go_type(schema.get("additionalProperties", {}))
        return "string"

    def _struct_field(self, kind: str, path: Path) -> Tuple[str, str, Any]:
        """(Go struct holding the last field, dotted field path, the field's schema)."""
        schema: Any = self.roots[kind]
        struct, fields = kind, []
        for p in path:
            schema, name = self._resolve(schema)
            if name:
                struct = name.rsplit(".", 1)[-1]
            if isinstance(p, int):
                schema = schema.get("items", {})
            elif p in (schema.get("properties") or {}):
                fields.append(p)
                schema = schema["properties"][p]
            else:
                schema = schema.get("additionalProperties", {})
        return struct, ".".join(fields), schema

    # ------------------------------------------------------------ checking

    def check(self, resource: str, obj: Obj, field_validation: str,
              warnings: Optional[List[str]] = None) -> List[Cause]:
        """Raise the API server's 400 for what fails decoding; return the 422 causes.

        Unknown fields are removed from `obj` when fieldValidation is Warn or Ignore.
        """
        kind, version = KINDS[resource]
        type_errors: List[Any] = []
        unknown: List[Path] = []
        causes: List[Cause] = []
        for err in self.validators[kind].iter_errors(obj):
            path: Path = tuple(err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                known = set(err.schema.get("properties") or {})
                unknown += [path + (k,) for k in err.instance if k not in known]
            elif err.validator in ("type", "oneOf"):
                type_errors.append(err)
            elif err.validator == "required":
                causes += [(_field(path + (k,)), "FieldValueRequired", "Required value")
                           for k in err.validator_value if k not in err.instance]
            elif err.validator == "enum":
                allowed = ", ".join(f'"{v}"' for v in err.validator_value)
                causes.append((_field(path), "FieldValueNotSupported",
                               f'Unsupported value: "{err.instance}": supported values: '
                               f"{allowed}"))
            else:
                causes.append((_field(path), "FieldValueInvalid",
                               f"Invalid value: {err.instance!r}: {err.message}"))
        prefix = f'{kind} in version "{version}" cannot be handled as a {kind}: '
        if type_errors:
            err = min(type_errors, key=lambda e: len(e.absolute_path))
            struct, field, schema = self._struct_field(kind, tuple(err.absolute_path))
            raise ApiError(400, "BadRequest", prefix + (
                f"json: cannot unmarshal {_json_kind(err.instance)} into Go struct field "
                f"{struct}.{field} of type {self._go_type(schema)}"))
        mode = field_validation or "Strict"
        if unknown and mode == "Strict":
            listed = ", ".join(f'unknown field "{_field(p)}"' for p in unknown)
            raise ApiError(400, "BadRequest", prefix + f"strict decoding error: {listed}")
        for p in sorted(unknown, key=len, reverse=True):
            parent: Any = obj
            for part in p[:-1]:
                parent = parent[part]
            parent.pop(p[-1], None)
            if mode == "Warn" and warnings is not None:
                warnings.append(f'unknown field "{_field(p)}"')
        return causes
