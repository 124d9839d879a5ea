"""The Open Inference Protocol (V2, KServe / Triton / MLServer) beside ``/predict``, and the
server's OpenAPI document.

A V2 request names one tensor per model input column::

    {"id": "...", "inputs": [{"name": "distance", "shape": [2], "datatype": "FP64",
                              "data": [1400.0, 760.0]}, ...],
     "outputs": [{"name": "predictions"}], "parameters": {"content_type": "pd"}}

- ``shape`` is ``[n]`` or ``[n, 1]``; ``data`` a flat list of ``n`` values (for ``[n, 1]`` also
  row-major ``[[v], [v], ...]``). Every tensor has the same ``n``.
- ``datatype`` follows the column's kind: float ``FP64``/``FP32``, int ``INT64``/``INT32``,
  string and date-time (ISO 8601) ``BYTES``, boolean ``BOOL``.
- A tensor for a nullable column may be left out (all null) or carry ``null`` values.
- ``parameters.content_type`` may be ``"pd"`` (MLServer's pandas codec: one tensor per column,
  the same thing); ``parameters.event_time`` files the rows like ``/predict``'s ``event_time``.
- Only JSON tensors: the binary tensor extension (``Inference-Header-Content-Length``) is refused
  with 415 (tritonclient: ``set_data_from_numpy(..., binary_data=False)``).

The tensors become ``/predict``'s columnar body, so the contract checks every value the same way;
the answer's ``outputs`` are ``predictions`` and, for binary classifiers, ``scores``. Refusals
name the tensor and the problem, never a submitted value.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pipeline_tasks.serving.contract import BadInput, Contract

if TYPE_CHECKING:
    from pipeline_tasks.serving.model import ServedModel

#: column kind -> (the datatype metadata advertises, the datatypes accepted)
DATATYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "float": ("FP64", ("FP64", "FP32")),
    "int": ("INT64", ("INT64", "INT32")),
    "str": ("BYTES", ("BYTES",)),
    "datetime": ("BYTES", ("BYTES",)),
    "bool": ("BOOL", ("BOOL",)),
}
#: every datatype of the protocol: a known one may be named in a refusal, another is not echoed
KNOWN_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                   "INT64", "FP16", "FP32", "FP64", "BF16", "BYTES")
OUTPUTS = ("predictions", "scores")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_REQUEST_KEYS = {"id", "inputs", "outputs", "parameters"}
_TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}


def _refuse(message: str, kind: str = "shape", status: int = 422) -> BadInput:
    return BadInput(status, message, kind)


# -- metadata ----------------------------------------------------------------------------------
def server_metadata() -> dict:
    return {"name": "mlops-pipeline", "version": "2", "extensions": []}


def output_datatype(served: ServedModel) -> str:
    """``predictions``' datatype: the class labels' type, FP64 for a regressor."""
    if not served.classes:
        return "FP64"
    first = served.classes[0]
    if isinstance(first, bool):
        return "BOOL"
    if isinstance(first, int):
        return "INT64"
    if isinstance(first, float):
        return "FP64"
    return "BYTES"


def output_names(served: ServedModel) -> list[str]:
    return ["predictions", "scores"] if served.classes and len(served.classes) == 2 \
        else ["predictions"]


def model_metadata(served: ServedModel, versions: list[str] | None = None) -> dict:
    """The V2 model metadata: one input tensor per column, the outputs; ``versions``: every
    version of the model the server holds (default: ``served``'s)."""
    inputs = [{"name": c.name, "datatype": DATATYPES[c.kind][0], "shape": [-1]}
              for c in served.contract.columns]
    outputs = [{"name": "predictions", "datatype": output_datatype(served), "shape": [-1]}]
    if "scores" in output_names(served):
        outputs.append({"name": "scores", "datatype": "FP64", "shape": [-1]})
    return {"name": served.name, "versions": versions or [served.version], "platform": "sklearn",
            "inputs": inputs, "outputs": outputs}


# -- requests ----------------------------------------------------------------------------------
def request_body(contract: Contract, payload: Any) -> tuple[dict, list[str] | None, str | None]:
    """A V2 request as ``/predict``'s columnar body (for ``contract.request``), the outputs asked
    for (None: all) and the request's ``id`` when it may be returned (a short plain token)."""
    if not isinstance(payload, dict):
        raise _refuse("body must be a JSON object with an 'inputs' array")
    if set(payload) - _REQUEST_KEYS:
        raise _refuse("body may only have 'id', 'inputs', 'outputs' and 'parameters'")
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _refuse("'parameters' must be an object")
    content_type = parameters.get("content_type", "pd")
    if content_type != "pd":
        raise _refuse("'parameters.content_type': only 'pd' (one tensor per column) is accepted")
    tensors = payload.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise _refuse("'inputs' must be a non-empty array of tensors")
    by_name = {c.name: c for c in contract.columns}
    columns: dict[str, list] = {}
    rows: int | None = None
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise _refuse(f"inputs[{i}]: expected a tensor object with a 'name'")
        name = tensor["name"]
        column = by_name.get(name)
        if column is None:
            raise _refuse(f"inputs[{i}]: a tensor the model does not take (its inputs are listed "
                          "by GET /v2/models/{name})", "unexpected_column")
        if name in columns:
            raise _refuse(f"input '{name}': given more than once")
        if set(tensor) - _TENSOR_KEYS:
            raise _refuse(f"input '{name}': a tensor may only have 'name', 'shape', "
                          "'datatype', 'data' and 'parameters'")
        if "parameters" in tensor and not isinstance(tensor["parameters"], dict):
            raise _refuse(f"input '{name}': 'parameters' must be an object")
        datatype = tensor.get("datatype")
        accepted = DATATYPES[column.kind][1]
        if datatype not in accepted:
            got = f"got {datatype}" if datatype in KNOWN_DATATYPES else "got an unknown datatype"
            raise _refuse(f"input '{name}': datatype must be {' or '.join(accepted)}, {got}",
                          "wrong_type")
        n = _rows_of(name, tensor.get("shape"))
        if n > contract.max_rows:
            raise _refuse(f"input '{name}': {n} rows: more than the limit of {contract.max_rows} "
                          "per request", "too_large", 413)
        if rows is None:
            rows = n
        elif n != rows:
            raise _refuse(f"input '{name}': shape has {n} rows, but the other inputs have {rows}")
        columns[name] = _flat(name, tensor.get("data"), n, tensor["shape"])
    missing = [c.name for c in contract.columns if c.required and c.name not in columns]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _refuse(f"missing input tensor '{missing[0]}'{more}", "missing_column")
    body: dict[str, Any] = {"columns": columns}
    if "event_time" in parameters:
        body["event_time"] = parameters["event_time"]
    return body, _requested(payload.get("outputs")), _safe_id(payload.get("id"))


def _rows_of(name: str, shape: Any) -> int:
    if not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(
            type(d) is int and d >= 0 for d in shape) or (len(shape) == 2 and shape[1] != 1):
        raise _refuse(f"input '{name}': shape must be [n] or [n, 1]")
    return shape[0]


def _flat(name: str, data: Any, n: int, shape: list[int]) -> list:
    if not isinstance(data, list):
        raise _refuse(f"input '{name}': 'data' must be an array")
    if len(shape) == 2 and data and all(isinstance(v, list) for v in data):
        if not all(len(v) == 1 for v in data):
            raise _refuse(f"input '{name}': each row of a [n, 1] tensor holds one value")
        data = [v[0] for v in data]
    if len(data) != n:
        raise _refuse(f"input '{name}': shape says {n} values, 'data' has {len(data)}")
    if any(isinstance(v, (list, dict)) for v in data):
        raise _refuse(f"input '{name}': 'data' must hold one value per row", "wrong_type")
    return data


def _requested(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise _refuse("'outputs' must be an array of objects with a 'name'")
    names = [o["name"] for o in outputs]
    if any(n not in OUTPUTS for n in names):
        raise _refuse("'outputs': the model's outputs are 'predictions' and 'scores' (binary "
                      "classifiers)")
    return names


def _safe_id(value: Any) -> str | None:
    return value if isinstance(value, str) and _SAFE_ID.fullmatch(value) else None


# -- answers -----------------------------------------------------------------------------------
def response(served: ServedModel, output: dict[str, list], requested: list[str] | None,
             request_id: str) -> dict:
    """The V2 answer: the model's outputs as tensors (``requested`` ones, else all)."""
    names = requested or list(output)
    missing = [n for n in names if n not in output]
    if missing:
        raise _refuse(f"output '{missing[0]}': this model has no such output")
    tensors = []
    for name in names:
        data = output[name]
        datatype = output_datatype(served) if name == "predictions" else "FP64"
        tensors.append({"name": name, "datatype": datatype, "shape": [len(data)], "data": data})
    return {"model_name": served.name, "model_version": served.version, "id": request_id,
            "outputs": tensors}


# -- the OpenAPI document ----------------------------------------------------------------------
_JSON_SCHEMA = {"float": {"type": "number"}, "int": {"type": "integer"},
                "str": {"type": "string"}, "datetime": {"type": "string", "format": "date-time"},
                "bool": {"type": "boolean"}}
_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}}}


def _value_schema(kind: str, nullable: bool, max_abs: float) -> dict:
    schema = dict(_JSON_SCHEMA[kind])
    if kind in ("float", "int"):
        schema.update(minimum=-max_abs, maximum=max_abs)
    if nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _errors(*codes: int) -> dict:
    words = {400: "not valid JSON", 401: "missing or invalid bearer token",
             404: "no such model or version", 405: "method not allowed",
             413: "body or rows above the limits", 415: "not application/json",
             422: "refused by the input contract", 500: "internal error"}
    return {str(code): {"description": words[code],
                        "content": {"application/json": {"schema": {"$ref":
                                                                    "#/components/schemas/Error"}}}}
            for code in codes}


def _ok(description: str, schema: dict | None = None, media: str = "application/json") -> dict:
    return {"200": {"description": description,
                    "content": {media: {"schema": schema or {"type": "object"}}}}}


def _bodies(served: ServedModel) -> tuple[dict, dict]:
    """The request schemas of ``served``: ``/predict``'s body and the V2 inference body, with
    the model's columns (so a generated request is a realistic one)."""
    contract = served.contract
    limit = contract.max_rows
    names = [c.name for c in contract.columns]
    required = [c.name for c in contract.columns if c.required]
    record = {"type": "object", "additionalProperties": False, "required": required,
              "properties": {c.name: _value_schema(c.kind, not c.required, contract.max_abs)
                             for c in contract.columns}}
    columns = {"type": "object", "additionalProperties": False, "required": required,
               "properties": {c.name: {"type": "array", "minItems": 1, "maxItems": 5,
                                       "items": _value_schema(c.kind, not c.required,
                                                              contract.max_abs)}
                              for c in contract.columns}}
    extras = {"ids": {"type": "array", "maxItems": limit,
                      "items": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 128},
                                          {"type": "integer"}]}},
              "event_time": {"type": "string", "format": "date-time"}}
    predict_body = {"oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["records"],
         "properties": {"records": {"type": "array", "minItems": 1, "maxItems": limit,
                                    "items": record}, **extras}},
        {"type": "object", "additionalProperties": False, "required": ["columns"],
         "properties": {"columns": columns, **extras}},
    ]}
    tensors = []
    for c in contract.columns:
        datatypes = list(DATATYPES[c.kind][1])
        tensors.append({"type": "object", "additionalProperties": False,
                        "required": ["name", "shape", "datatype", "data"],
                        "properties": {
                            "name": {"const": c.name},
                            "shape": {"type": "array", "minItems": 1, "maxItems": 2,
                                      "items": {"type": "integer", "minimum": 0,
                                                "maximum": limit}},
                            "datatype": {"enum": datatypes},
                            "data": {"type": "array", "maxItems": limit,
                                     "items": _value_schema(c.kind, not c.required,
                                                            contract.max_abs)},
                            "parameters": {"type": "object"}}})
    infer_body = {"type": "object", "additionalProperties": False, "required": ["inputs"],
                  "properties": {
                      "id": {"type": "string", "maxLength": 64},
                      "inputs": {"type": "array", "minItems": 1, "maxItems": len(names),
                                 "items": {"oneOf": tensors}},
                      "outputs": {"type": "array", "items": {
                          "type": "object", "required": ["name"],
                          "properties": {"name": {"enum": list(OUTPUTS)}}}},
                      "parameters": {"type": "object", "properties": {
                          "content_type": {"const": "pd"},
                          "event_time": {"type": "string", "format": "date-time"}}}}}
    return predict_body, infer_body


def openapi(models: list[ServedModel]) -> dict:
    """OpenAPI 3.1 for every endpoint, with the models' columns in the request schemas:
    ``/predict`` takes the first (default) model's body, the routes naming a model any served
    model's body."""
    default = models[0]
    outputs = {"predictions": {"type": "array"}, "scores": {"type": "array",
                                                            "items": {"type": "number"}}}
    predict_answer = {"type": "object", "required": ["request_id", "model_name", "model_version",
                                                     "predictions"],
                      "properties": {"request_id": {"type": "string"},
                                     "model_name": {"type": "string"},
                                     "model_version": {"type": "string"}, **outputs}}
    tensor_out = {"type": "object", "required": ["name", "datatype", "shape", "data"],
                  "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                 "shape": {"type": "array", "items": {"type": "integer"}},
                                 "data": {"type": "array"}}}
    infer_answer = {"type": "object", "required": ["model_name", "model_version", "outputs"],
                    "properties": {"model_name": {"type": "string"},
                                   "model_version": {"type": "string"},
                                   "id": {"type": "string"},
                                   "outputs": {"type": "array", "items": tensor_out}}}
    meta_tensor = {"type": "object", "required": ["name", "datatype", "shape"],
                   "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                  "shape": {"type": "array", "items": {"type": "integer"}}}}
    model_meta = {"type": "object", "required": ["name", "versions", "inputs", "outputs"],
                  "properties": {"name": {"type": "string"},
                                 "versions": {"type": "array", "items": {"type": "string"}},
                                 "platform": {"type": "string"},
                                 "inputs": {"type": "array", "items": meta_tensor},
                                 "outputs": {"type": "array", "items": meta_tensor}}}
    secured = [{"bearer": []}]

    def op(op_id: str, summary: str, responses: dict, *, body: dict | None = None,
           params: list | None = None, open_: bool = False) -> dict:
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
        if body is not None:
            out["requestBody"] = {"required": True,
                                  "content": {"application/json": {"schema": body}}}
        if params:
            out["parameters"] = params
        out["security"] = [] if open_ else secured
        return out

    bodies = [_bodies(served) for served in models]

    def either(schemas: list[dict]) -> dict:
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}

    any_predict, any_infer = either([b[0] for b in bodies]), either([b[1] for b in bodies])
    model_name = {"name": "model_name", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": [m.name for m in models]}}
    model_version = {"name": "model_version", "in": "path", "required": True,
                     "schema": {"type": "string",
                                "enum": sorted({m.version for m in models})}}
    infer_errors = _errors(400, 401, 404, 413, 415, 422, 500)
    predict_errors = _errors(400, 401, 413, 415, 422, 500)
    paths = {
        "/predict": {"post": op("predict", f"Predict a batch (records or columns) with the "
                                           f"default model, {default.name}",
                                {**_ok("predictions (and scores)", predict_answer),
                                 **predict_errors}, body=bodies[0][0])},
        "/health": {"get": op("health", "The process is alive", _ok("alive"), open_=True)},
        "/ready": {"get": op("ready", "The models are loaded", _ok("ready"), open_=True)},
        "/metadata": {"get": op("metadata", "The default model's version, lineage and signature",
                                {**_ok("metadata"), **_errors(401)})},
        "/models": {"get": op("models", "The metadata of every model served",
                              {**_ok("metadata of each model"), **_errors(401)})},
        "/models/{model_name}/predict": {"post": op(
            "model_predict", "Predict a batch with the model named",
            {**_ok("predictions (and scores)", predict_answer), **predict_errors,
             **_errors(404)}, body=any_predict, params=[model_name])},
        "/models/{model_name}/metadata": {"get": op(
            "model_metadata", "The named model's version, lineage and signature",
            {**_ok("metadata"), **_errors(401, 404)}, params=[model_name])},
        "/metrics": {"get": op("metrics", "Prometheus metrics",
                               {**_ok("metrics", {"type": "string"}, "text/plain"),
                                **_errors(401)})},
        "/openapi.json": {"get": op("openapi", "This document", {**_ok("OpenAPI 3.1"),
                                                                  **_errors(401)})},
        "/v2": {"get": op("v2_server_metadata", "V2 server metadata",
                          {**_ok("server metadata"), **_errors(401)})},
        "/v2/health/live": {"get": op("v2_live", "V2 liveness", _ok("live"), open_=True)},
        "/v2/health/ready": {"get": op("v2_ready", "V2 readiness", _ok("ready"), open_=True)},
        "/v2/models/{model_name}": {"get": op(
            "v2_model_metadata", "V2 model metadata: the signature as tensors",
            {**_ok("model metadata", model_meta), **_errors(401, 404)}, params=[model_name])},
        "/v2/models/{model_name}/ready": {"get": op(
            "v2_model_ready", "V2 model readiness", {**_ok("ready"), **_errors(401, 404)},
            params=[model_name])},
        "/v2/models/{model_name}/versions/{model_version}": {"get": op(
            "v2_version_metadata", "V2 model version metadata",
            {**_ok("model metadata", model_meta), **_errors(401, 404)},
            params=[model_name, model_version])},
        "/v2/models/{model_name}/versions/{model_version}/ready": {"get": op(
            "v2_version_ready", "V2 model version readiness",
            {**_ok("ready"), **_errors(401, 404)}, params=[model_name, model_version])},
        "/v2/models/{model_name}/infer": {"post": op(
            "v2_infer", "V2 inference: one tensor per input column",
            {**_ok("output tensors", infer_answer), **infer_errors}, body=any_infer,
            params=[model_name])},
        "/v2/models/{model_name}/versions/{model_version}/infer": {"post": op(
            "v2_version_infer", "V2 inference on a named version",
            {**_ok("output tensors", infer_answer), **infer_errors}, body=any_infer,
            params=[model_name, model_version])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlops-pipeline model server: "
                          + ", ".join(f"{m.name} v{m.version}" for m in models),
                 "version": default.version or "0"},
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
