#!/usr/bin/env python3
"""Generates wire/src/bounds/generated.rs: bounded walkers for the Kafka messages gregor decodes.

Why: the `kafka-protocol` crate allocates `Vec::with_capacity(n)` for an array length `n` read
from the wire before it reads a single element, so an 18-byte request can ask for 2^31 elements
and abort the process. A walker checks every length against the bytes that remain, and only a
frame that walks cleanly is handed to the crate.

The walkers are derived mechanically from the crate's own generated `Decodable` impls (the
`decode` function of every message struct), so they follow exactly the fields, versions,
nullability and tagged fields that the decoder will later read. `wire/src/bounds/tests.rs`
cross-checks them against the crate: a walker must consume exactly what the decoder consumes.

Usage (from the repository root; the crate source comes from cargo's registry):
    python3 wire/tools/gen_bounds.py > wire/src/bounds/generated.rs && cargo fmt --all
"""

import glob
import os
import re
import sys

CRATE_VERSION = "0.18.0"

# Messages outside the request/response pairs that gregor decodes from untrusted bytes:
# the consumer protocol carried inside JoinGroup/SyncGroup.
EXTRA_MESSAGES = ["consumer_protocol_subscription", "consumer_protocol_assignment"]

# The API keys gregor's broker serves or its client sends, now or in the issues next in line
# (exactly-once, replication). A key missing here is refused before its body is decoded: add it
# and run the generator again.
GREGOR_APIS = """
    Produce Fetch ListOffsets Metadata OffsetCommit OffsetFetch FindCoordinator JoinGroup
    Heartbeat LeaveGroup SyncGroup DescribeGroups ListGroups ApiVersions CreateTopics
    DeleteTopics DeleteRecords InitProducerId OffsetForLeaderEpoch AddPartitionsToTxn
    AddOffsetsToTxn EndTxn WriteTxnMarkers TxnOffsetCommit DescribeConfigs AlterConfigs
    CreatePartitions DeleteGroups IncrementalAlterConfigs OffsetDelete DescribeCluster
    DescribeTransactions ListTransactions DescribeQuorum
""".split()

FIXED_WIDTH = {
    "types::Int8": 1,
    "types::Int16": 2,
    "types::Int32": 4,
    "types::Int64": 8,
    "types::UInt16": 2,
    "types::Float64": 8,
    "types::Uuid": 16,
    "types::Boolean": 1,
}


def crate_dir():
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    pattern = os.path.join(home, "registry/src/*/kafka-protocol-" + CRATE_VERSION)
    found = sorted(glob.glob(pattern))
    if not found:
        sys.exit(f"kafka-protocol {CRATE_VERSION} not found under {pattern}: run `cargo fetch`")
    return found[-1]


def block_end(text, open_index):
    """Index just past the brace/paren that matches the opener at `open_index`."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack = []
    i = open_index
    in_string = False
    while i < len(text):
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            assert stack and stack[-1] == c, f"unbalanced at {i}: {text[open_index:i + 40]!r}"
            stack.pop()
            if not stack:
                return i + 1
        i += 1
    raise ValueError("unterminated block")


def statements(body):
    """Top-level statements of a block body: `...;` or `if ... { ... } [else ...]`."""
    out = []
    i = 0
    while True:
        while i < len(body) and body[i].isspace():
            i += 1
        if i >= len(body):
            return out
        start = i
        if body.startswith("Ok(", i):
            out.append(body[start:].strip())  # The constructor ends the body.
            return out
        if body.startswith("if ", i) or body.startswith("for ", i):
            i = skip_if_chain(body, i)
        else:
            while body[i] != ";":
                i = block_end(body, i) if body[i] in "{([" else i + 1
            i += 1
        out.append(body[start:i].strip())


def skip_if_chain(text, i):
    """Index just past an `if c { } else if c { } else { }` chain starting at `i`."""
    while True:
        i = block_end(text, text.index("{", i))
        rest = text[i:]
        stripped = rest.lstrip()
        if stripped.startswith("else"):
            i += len(rest) - len(stripped) + len("else")
            continue
        return i


def parse_if_chain(text):
    """`if c1 { a } else if c2 { b } else { d }` -> [(c1, a), (c2, b), (None, d)]."""
    arms = []
    i = 0
    while True:
        text_i = text[i:].lstrip()
        i = len(text) - len(text_i)
        if text_i.startswith("if "):
            brace = text.index("{", i)
            condition = text[i + 3 : brace].strip()
        else:
            brace = text.index("{", i)
            condition = None
        end = block_end(text, brace)
        arms.append((condition, text[brace + 1 : end - 1].strip()))
        rest = text[end:].lstrip()
        if not rest.startswith("else"):
            return arms
        i = len(text) - len(rest) + len("else")


class Message:
    def __init__(self, module, source):
        self.module = module
        self.source = source
        self.field_types = {}  # struct -> {field: rust type}
        for match in re.finditer(r"pub struct (\w+) \{", source):
            end = block_end(source, match.end() - 1)
            fields = dict(re.findall(r"pub (\w+): ([^\n]+),\n", source[match.end() : end]))
            self.field_types[match.group(1)] = fields

    def decoders(self):
        for match in re.finditer(r"impl Decodable for (\w+) \{", self.source):
            fn = self.source.index("fn decode<B: ByteBuf>", match.end())
            brace = self.source.index("{", self.source.index("-> Result<Self>", fn))
            body = self.source[brace + 1 : block_end(self.source, brace) - 1]
            yield match.group(1), body


def snake(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def element_type(rust_type):
    """The innermost type of `Option<Vec<T>>`, `Vec<T>`, `Option<T>`, with its nullability."""
    nullable = rust_type.startswith("Option<")
    inner = rust_type[len("Option<") : -1] if nullable else rust_type
    if inner.startswith("Vec<"):
        inner = inner[len("Vec<") : -1]
    inner_nullable = inner.startswith("Option<")
    if inner_nullable:
        inner = inner[len("Option<") : -1]
    return nullable, inner, inner_nullable


def walk_call(expr, field_type):
    """A walker statement for one `types::...` decoder expression applied to a field."""
    nullable, inner, inner_nullable = element_type(field_type)
    expr = re.sub(r"\s+", " ", expr).strip()
    return walk_expr(expr, nullable, inner, inner_nullable) + "?;"


def walk_expr(expr, nullable, inner, inner_nullable):
    """A walker expression (of type `Walked`) for one decoder expression."""
    if expr in FIXED_WIDTH:
        return f"w.fixed({FIXED_WIDTH[expr]})"
    null = "Null::Allowed" if nullable else "Null::Refused"
    simple = {
        "types::String": f"w.string({null})",
        "types::CompactString": f"w.compact_string({null})",
        "types::Bytes": f"w.bytes({null})",
        "types::CompactBytes": f"w.compact_bytes({null})",
        "types::UnsignedVarInt": "w.unsigned_varint().map(drop)",
        "types::Struct { version }": f"{snake(inner)}(w, version)",
        "types::OptionStruct { version }": f"w.option_struct(|w| {snake(inner)}(w, version))",
    }
    if expr in simple:
        return simple[expr]
    array = re.fullmatch(r"types::(Array|CompactArray)\((.*)\)", expr)
    if array:
        method = "array" if array.group(1) == "Array" else "compact_array"
        element = walk_expr(array.group(2), inner_nullable, inner, False)
        return f"w.{method}({null}, |w| {element})"
    raise ValueError(f"unknown decoder expression {expr!r}")


DECODE = re.compile(r"^(types::.*)\.decode\(buf\)\?$", re.S)


def value_code(expr, field_type):
    """Walker code for a `let` initialiser: a decoder call, an if chain, or a default."""
    expr = expr.strip()
    decode = DECODE.match(expr)
    if decode:
        return walk_call(decode.group(1), field_type)
    if expr.startswith("if "):
        arms = parse_if_chain(expr)
        return if_code([(c, value_code(a, field_type)) for c, a in arms])
    return ""  # A default value: this version does not carry the field.


def if_code(arms):
    while arms and arms[-1][1] == "":
        arms = arms[:-1]  # A trailing default arm walks nothing.
    if not arms:
        return ""
    out = []
    for condition, code in arms:
        head = f"if {condition} " if condition is not None else ""
        out.append(f"{head}{{ {code} }}")
    return " else ".join(out)


def tagged_code(statement, fields):
    """The tagged-field section: known tags walk their type, unknown tags skip `size` bytes."""
    if statement.startswith("for "):
        condition = None  # Every version of this message is flexible.
    else:
        condition = statement[3 : statement.index("{")].strip()
    arms = []
    if "match tag {" not in statement:
        return guarded(condition, "w.tagged_fields(|_, _| Ok(Tag::Unknown))?;")
    match = statement.index("match tag {")
    block = statement[match + len("match tag ") : block_end(statement, match + len("match tag "))]
    for arm in re.finditer(r"(\d+) => \{", block):
        body = block[arm.end() : block_end(block, arm.end() - 1) - 1].strip()
        assign = re.compile(r"^(\w+)\s*=\s*(types::.*)\.decode\(buf\)\?;$", re.S)
        if body.startswith("if "):
            [(version, inner), (_, _bail)] = parse_if_chain(body)
        else:
            version, inner = None, body
        found = assign.match(inner.strip())
        assert found, f"tag arm {inner!r}"
        code = walk_call(found.group(2), fields[found.group(1)])
        guard = f" if {version}" if version else ""
        arms.append(f"{arm.group(1)}{guard} => {{ {code} Ok(Tag::Known) }}")
        if version:
            arms.append(f"{arm.group(1)} => Err(w.invalid(\"tag not valid in this version\")),")
    arms.append("_ => Ok(Tag::Unknown),")
    known = "\n".join(arms)
    return guarded(condition, f"w.tagged_fields(|w, tag| match tag {{ {known} }})?;")


def guarded(condition, code):
    return f"if {condition} {{ {code} }}" if condition else code


def struct_walker(message, name, body):
    fields = message.field_types[name]
    lines = []
    for statement in statements(body):
        if statement.startswith("if version ") and "not supported by this message" in statement:
            condition = statement[3 : statement.index("{")].strip()
            lines.append(f"if {condition} {{ return Err(w.invalid(\"version not supported by this message type\")); }}")
            continue
        if statement.startswith(("let mut ", "Ok(Self", "let num_tagged_fields")):
            continue  # Defaults for tagged fields, the tag count (walked below), the constructor.
        if statement.startswith(("if ", "for ")) and "num_tagged_fields" in statement:
            lines.append(tagged_code(statement, fields))
            continue
        let = re.match(r"let (\w+)\s*=\s*(.*);$", statement, re.S)
        assert let, f"{message.module}::{name}: unexpected statement {statement[:80]!r}"
        code = value_code(let.group(2), fields[let.group(1)])
        if code:
            lines.append(code)
    uses = "version" if "version" in "".join(lines) else "_version"
    code = "\n".join(lines)
    return (
        f"pub fn {snake(name)}<W: Walk>(w: &mut W, {uses}: i16) -> Walked {{\n{code}\nOk(())\n}}\n"
    )


def api_keys(messages_rs):
    """(ApiKey variant, request module, response module) for every API key the crate knows."""
    enum = messages_rs[messages_rs.index("pub enum ApiKey {") :]
    enum = enum[: block_end(enum, enum.index("{"))]
    keys = re.findall(r"\n\s+(\w+) = \d+,", enum)
    unknown = set(GREGOR_APIS) - set(keys)
    assert not unknown, f"not API keys of the crate: {unknown}"
    keys = [key for key in keys if key in GREGOR_APIS]
    return [(key, snake(key) + "_request", snake(key) + "_response") for key in keys]


def main():
    root = crate_dir()
    messages_rs = open(os.path.join(root, "src/messages.rs")).read()
    keys = api_keys(messages_rs)
    modules = ["request_header", "response_header"] + EXTRA_MESSAGES
    for _, request, response in keys:
        modules += [request, response]
    print("// @generated by wire/tools/gen_bounds.py from kafka-protocol " + CRATE_VERSION + ".")
    print("// Do not edit: change the generator and run it again (see its docstring).")
    print("use super::walker::{Null, Tag, Walk, Walked};")
    print("use kafka_protocol::messages::ApiKey;")
    for module in modules:
        message = Message(module, open(os.path.join(root, "src/messages", module + ".rs")).read())
        print(f"pub mod {module} {{\nuse super::*;")
        for name, body in message.decoders():
            print(struct_walker(message, name, body))
        print("}")
    for kind in ["request", "response"]:
        print(f"/// Walks the body of one {kind} of `api_key`; `None` for a key gregor never decodes.")
        print(f"pub fn {kind}<W: Walk>(api_key: ApiKey, w: &mut W, version: i16) -> Option<Walked> {{")
        print("Some(match api_key {")
        for key, request, response in keys:
            module = request if kind == "request" else response
            top = snake(key) + "_" + kind
            print(f"ApiKey::{key} => {module}::{top}(w, version),")
        print("_ => return None,\n})\n}")


if __name__ == "__main__":
    main()
