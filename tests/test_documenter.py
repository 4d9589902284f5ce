"""The built-in documenter: what it finds in each language, and that it never raises."""

from __future__ import annotations

import os
import re
import sys
import time

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(ROOT))
from cqlib.config import parse_config
from cqlib.documenters import LANGUAGES, detect_language, document_text
from cqlib.documenters.language import DOC_COMMENT_MAX_CHARS, entry
from cqlib.documenters.patterns import plan_match, plans
from cqlib.errors import CqError
from cqlib.search import SearchQuery
from cqlib.words import (
    NAME_MARK,
    case_runs,
    file_words,
    identifier_parts,
    identifier_patterns,
    marked_in_name,
    path_words,
    split_identifier,
    squash,
    with_search_words,
)


def names(doc: dict, kind: str | None = None) -> list[str]:
    return [e["name"] for e in doc["entries"] if kind is None or e["kind"] == kind]


def find(doc: dict, name: str) -> dict:
    return next(e for e in doc["entries"] if e["name"] == name)


def words(doc: dict) -> set[str]:
    """The words of a file's file-level record."""
    return set(doc["words"].split())


def test_python_module_docstring_classes_methods_functions_and_imports():
    source = b'''"""Parse configuration files."""
import os
from pathlib import Path


class Loader(Base):
    """Loads things."""

    def load(self, path: str) -> dict:
        """Load one file."""
        return {}


async def fetch(url, *, timeout=3):
    pass
'''
    doc = document_text("pkg/conf.py", source)
    assert doc["language"] == "python" and doc["summary"] == "Parse configuration files."
    assert find(doc, "Loader")["signature"] == "class Loader(Base)"
    assert find(doc, "Loader")["doc"] == "Loads things."
    load = find(doc, "load")
    assert (load["kind"], load["line"]) == ("method", 9)
    assert load["signature"] == "def Loader.load(self, path: str) -> dict"
    assert find(doc, "fetch")["signature"] == "async def fetch(url, *, timeout=3)"
    assert names(doc, "import") == ["os", "pathlib.Path"]


def test_javascript_and_typescript_definitions_with_doc_comments():
    source = b"""/**
 * Renders the page.
 */
export function renderPage(props) {}
export default class Widget {
  handleClick(event) {
  }
}
const add = (a, b) => a + b;
export interface Options { debug: boolean }
type Id = string;
"""
    doc = document_text("src/app.ts", source)
    assert doc["language"] == "typescript"
    assert find(doc, "renderPage")["doc"] == "Renders the page."
    assert find(doc, "renderPage")["line"] == 4
    assert {"Widget", "handleClick", "add", "Options", "Id"} <= set(names(doc))


def test_go_rust_java_c_and_shell_definitions():
    cases = {
        "main.go": ((b"// Serve starts the server.\nfunc Serve(addr string) error {\n}\n"
                    b"type Server struct {\n}\nfunc (s *Server) Close() {}\n"),
                    {"Serve", "Server", "Close"}),
        "lib.rs": ((b"/// Adds two numbers.\npub fn add(a: i32) -> i32 { a }\n"
                   b"pub struct Point { x: i32 }\ntrait Shape {}\nimpl Shape for Point {}\n"),
                   {"add", "Point", "Shape"}),
        "App.java": ((b"/** The app. */\npublic class App {\n"
                     b"    public static void main(String[] a) {\n"),
                     {"App", "main"}),
        "util.c": ((b"#define MAX 10\n/* Sum of two. */\nint sum(int a, int b)\n{\n}\n"
                   b"struct node {\n};\n"), {"MAX", "sum", "node"}),
        "run.sh": (b"#!/bin/sh\n# Deploys the app.\ndeploy() {\n}\nfunction clean {\n}\n",
                   {"deploy", "clean"}),
    }
    for path, (source, expected) in cases.items():
        doc = document_text(path, source)
        assert expected <= set(names(doc)), (path, names(doc))
    assert find(document_text("main.go", cases["main.go"][0]), "Serve")["doc"] == \
        "Serve starts the server."
    assert find(document_text("lib.rs", cases["lib.rs"][0]), "add")["doc"] == \
        "Adds two numbers."
    assert document_text("run.sh", cases["run.sh"][0])["summary"] == "Deploys the app."


@pytest.mark.parametrize("path, source, expected", [
    ("conf.py", (b"import os\nMAX_SIZE = 10\n#: the loaded table\ntable = {}\n_, rest = 1, 2\n"
                 b"if __name__ == '__main__':\n    os = 1\n"),
     {("MAX_SIZE", "constant"), ("table", "variable"), ("rest", "variable")}),
    ("conf.js", b"const MAX_SIZE = 10;\nexport let count = 0;\nconst fs = require('fs');\n",
     {("MAX_SIZE", "constant"), ("count", "variable")}),
    ("conf.ts", b"export const LIMIT: number = 3;\nclass A {\n  static readonly TOP = 1;\n}\n",
     {("LIMIT", "constant"), ("TOP", "constant")}),
    ("conf.go", b"package conf\n\nconst (\n\tA = 1\n\tB, C = 2, 3\n)\nvar hits int\n",
     {("A", "constant"), ("B", "constant"), ("C", "constant"), ("hits", "variable")}),
    ("conf.rs", b"pub const MAX: u32 = 4;\nstatic NAME: &str = \"x\";\n",
     {("MAX", "constant"), ("NAME", "constant")}),
    ("conf.c", b"#define BUFSZ 1024\nint counter = 0;\nstatic const int LIMIT = 3;\n",
     {("BUFSZ", "constant"), ("counter", "variable"), ("LIMIT", "constant")}),
    ("Conf.java", b"class Conf {\n  public static final int MAX = 3;\n}\n", {("MAX", "constant")}),
])
def test_module_level_constants_and_variables_are_definitions(path, source, expected):
    doc = document_text(path, source)
    assert expected <= {(e["name"], e["kind"]) for e in doc["entries"]}, doc["entries"]
    assert not {"os", "fs", "require", "_"} & set(names(doc, "variable"))


@pytest.mark.parametrize("path, source, name, lines", [
    ("a.py", b"@cache\ndef f(x):\n    y = (x +\n         1)\n    return y\n\nZ = 1\n", "f", (2, 5)),
    ("a.go", b"package a\n\nfunc F() {\n\tif x {\n\t}\n}\nvar Y = 1\n", "F", (3, 6)),
    ("a.rs", b"fn f() {\n    let s = \"}\";\n}\nfn g() {}\n", "f", (1, 3)),
    ("a.c", b"int f(void)\n{\n  char c = '}';\n  return 0;\n}\nint g;\n", "f", (1, 5)),
    ("a.js", b"function f() {\n  const re = /[{]/;\n  return `${re}`;\n}\nconst g = 1;\n",
     "f", (1, 4)),
])
def test_each_definition_knows_its_last_line(path, source, name, lines):
    entry_ = find(document_text(path, source), name)
    assert (entry_["line"], entry_["end"]) == lines


def test_a_javascript_class_keeps_its_methods_past_lines_of_brackets_and_calls():
    source = (b"class Command {\n  constructor(name) {\n    super();\n    this.args = [];\n"
              b"    this.config = {\n      write: (s) => out(s),\n    };\n  }\n\n"
              b"  unknownOption(flag) {\n    fail();\n  }\n}\n")
    doc = document_text("command.js", source)
    assert find(doc, "unknownOption")["container"] == "Command"
    assert (find(doc, "constructor")["line"], find(doc, "constructor")["end"]) == (2, 8)


def test_a_c_function_with_its_return_type_on_a_line_of_its_own_is_a_definition():
    source = (b"/* Sort with a temporary buffer.  */\nstatic void\n"
              b"msort_with_tmp (struct param *p, void *b, size_t n)\n{\n  if (n <= 1)\n"
              b"    return;\n}\n\nint\nmain (void)\n{\n  return 0;\n}\n")
    doc = document_text("msort.c", source)
    sort = find(doc, "msort_with_tmp")
    assert (sort["kind"], sort["line"], sort["end"]) == ("function", 3, 7)
    assert sort["signature"].startswith("static void msort_with_tmp (")
    assert sort["doc"] == "Sort with a temporary buffer."
    assert (find(doc, "main")["line"], find(doc, "main")["end"]) == (10, 13)
    assert "void" not in names(doc) and "int" not in names(doc)


def test_a_prototype_a_header_exports_is_a_definition_and_a_forward_declaration_is_not():
    source = (b"/* The largest size a compressed block may take. */\n"
              b"LZ4LIB_API int LZ4_compressBound(int inputSize);\n"
              b"extern int shared_count(void);\nstatic int helper(int x);\n")
    doc = document_text("lz4.h", source)
    assert find(doc, "LZ4_compressBound")["doc"] == \
        "The largest size a compressed block may take."
    assert "shared_count" in names(doc) and "helper" not in names(doc)


def test_a_c_function_with_its_body_on_the_same_line_is_a_definition():
    source = (b"int LZ4_versionNumber (void) { return LZ4_VERSION_NUMBER; }\n"
              b"int LZ4_compressBound(int isize)  { return LZ4_COMPRESSBOUND(isize); }\n"
              b"int helper(int x);\n")
    doc = document_text("lz4.c", source)
    assert names(doc, "function") == ["LZ4_versionNumber", "LZ4_compressBound"]
    assert find(doc, "LZ4_compressBound")["line"] == 2


def test_a_doc_comment_that_opens_with_its_own_name_is_read_from_what_it_says():
    source = (b"/*! LZ4_compressBound() :\n    Provides the maximum size in a worst case.\n*/\n"
              b"LZ4LIB_API int LZ4_compressBound(int inputSize);\n"
              b"/**\n * lz4_free() - Frees a context\n */\nvoid lz4_free(void *c) {\n}\n"
              b"/* bound is the largest size */\nextern int bound(void);\n")
    doc = document_text("lz4.h", source)
    assert find(doc, "LZ4_compressBound")["doc"] == "Provides the maximum size in a worst case."
    assert find(doc, "lz4_free")["doc"] == "Frees a context"
    assert find(doc, "bound")["doc"] == "bound is the largest size"


def test_an_all_capitals_macro_takes_the_doc_of_the_function_it_twins():
    source = (b"#define LZ4_COMPRESSBOUND(isize)  ((isize) + ((isize)/255) + 16)\n\n"
              b"/* Provides the maximum size in a worst case. */\n"
              b"LZ4LIB_API int LZ4_compressBound(int inputSize);\n"
              b"/* Its own doc. */\n#define LZ4_HASHLOG 12\nint lz4_hashlog(void);\n")
    doc = document_text("lz4.h", source)
    assert find(doc, "LZ4_COMPRESSBOUND")["doc"] == \
        "As LZ4_compressBound: Provides the maximum size in a worst case."
    assert find(doc, "LZ4_HASHLOG")["doc"] == "Its own doc."


def test_an_all_capitals_name_is_found_by_the_words_its_doc_spells_apart():
    macro = with_search_words({"name": "LZ4_COMPRESSBOUND", "container": "",
                               "doc": "As LZ4_compressBound: the largest output"})
    assert {"compress", "bound"} <= set(macro["words"].split())
    undocumented = with_search_words({"name": "BUFSIZE", "container": "", "doc": ""})
    assert undocumented["words"].split() == ["bufsize"]
    mixed = with_search_words({"name": "compressBound", "container": "", "doc": "compress bound"})
    assert mixed["words"].split() == ["compress", "bound", "compressbound"]


def test_c_functions_with_attributes_before_their_name_are_definitions():
    source = (b"__attribute__((noreturn)) void die(const char *msg)\n{\n}\n"
              b"int __attribute__ ((weak)) weak_fn (void)\n{\n  return 1;\n}\n"
              b"[[nodiscard]] int checked(int x) {\n  return x;\n}\n"
              b"static __always_inline unsigned long\nhash_bytes (const void *p)\n{\n}\n")
    doc = document_text("attrs.c", source)
    assert names(doc, "function") == ["die", "weak_fn", "checked", "hash_bytes"]
    assert (find(doc, "weak_fn")["line"], find(doc, "weak_fn")["end"]) == (4, 7)


def test_a_c_function_defined_the_old_way_ends_with_its_body():
    source = (b"int\nold_style (a, b)\n     int a;\n     char *b;\n{\n  return a;\n}\n\n"
              b"int after (void)\n{\n}\n")
    doc = document_text("kr.c", source)
    assert (find(doc, "old_style")["line"], find(doc, "old_style")["end"]) == (2, 7)
    assert find(doc, "after")["line"] == 9


def test_a_c_function_named_through_a_macro_is_recorded_under_both_names():
    source = (b"#define STRCASESTR strcasestr\n\n/* Find a string, ignoring case. */\n"
              b"char *\nSTRCASESTR (const char *haystack, const char *needle)\n{\n}\n")
    doc = document_text("strcasestr.c", source)
    for name in ("STRCASESTR", "strcasestr"):
        function = next(e for e in doc["entries"]
                        if e["name"] == name and e["kind"] == "function")
        assert (function["line"], function["end"]) == (5, 7)
        assert function["doc"] == "Find a string, ignoring case."


def test_a_macro_defined_inside_a_namespace_is_in_no_namespace():
    source = (b"namespace testing {\n/* Tests that a statement throws. */\n"
              b"#define EXPECT_THROW(statement, exception) CHECK(statement)\n"
              b"class Foo {\n public:\n  void bar();\n};\n}\n")
    doc = document_text("gtest.h", source)
    assert find(doc, "EXPECT_THROW")["container"] == ""
    assert find(doc, "bar")["container"] == "testing::Foo"


def test_the_body_of_a_multi_line_define_defines_nothing():
    source = (b"#define FORWARD_ARG(i, arg) \\\n  , arg(::std::forward<arg>(p##i))\n"
              b"#define WRAP(x) \\\n  int hidden_fn(int y) { return y; }\n"
              b"int after(void)\n{\n  return 0;\n}\n")
    doc = document_text("m.cc", source)
    assert names(doc) == ["FORWARD_ARG", "WRAP", "after"]


def test_a_cpp_base_class_list_is_not_a_method_and_a_conversion_is_named_operator():
    source = (b"struct negation\n    : std::integral_constant<bool, bool(!P::value)> {};\n"
              b"class Foo {\n public:\n  explicit operator bool() const;\n  void bar();\n};\n")
    doc = document_text("m.cc", source)
    assert names(doc, "method") == ["operator bool", "bar"]


def test_a_licence_header_is_never_a_summary():
    go = (b"// Copyright 2013-2022 The Cobra Authors\n//\n// Licensed under the Apache License,"
          b" Version 2.0\n\n// Package cobra is a commander for modern CLI apps.\n"
          b"package cobra\n")
    assert document_text("cobra.go", go)["summary"] == \
        "Package cobra is a commander for modern CLI apps."
    python = b'"""Copyright (c) 2020 Someone.\n\nAll rights reserved."""\ndef run():\n    pass\n'
    assert "Copyright" not in document_text("run.py", python)["summary"]


def test_rules_drawn_in_punctuation_are_never_a_summary():
    source = b"/*-************\n*  Tuning parameters\n**************/\nint x;\n"
    assert document_text("lz4.c", source)["summary"] == "Tuning parameters"


def test_a_file_without_a_comment_is_summarised_by_what_it_defines():
    source = b"const LIMIT = 3;\nclass Loader {\n}\nfunction parse(a) {\n}\n"
    assert document_text("loader.js", source)["summary"] == \
        "Defines class Loader; function parse; constant LIMIT."


def test_markdown_headings_with_their_first_paragraph():
    doc = document_text("README.md", b"# Title\n\nIntro text.\n\n```\n# not a heading\n```\n"
                                        b"## Usage\n\nRun it.\n")
    assert names(doc, "heading") == ["Title", "Usage"]
    assert find(doc, "Usage")["doc"] == "Run it." and find(doc, "Usage")["line"] == 8


def test_any_other_text_gets_its_leading_comment_and_identifiers():
    doc = document_text("conf/settings.ini", b"; Settings for the service.\n"
                                                b"max_connections = 10\nretry_delay = 2\n")
    assert doc["language"] == "text"
    assert doc["summary"] == "Settings for the service."
    assert {"max_connections", "retry_delay"} <= words(doc)  # FTS splits them at the _


def test_a_python_file_that_fails_to_parse_keeps_its_definitions_and_words():
    doc = document_text("bad.py", b"def broken(:\n    pass\n\n\nclass JustAdded:\n    x = 1\n")
    assert doc["error"].startswith("SyntaxError")
    assert names(doc) == ["broken", "JustAdded"]
    assert {"broken", "justadded", "just", "added"} <= words(doc)


def test_scripts_are_recognised_by_their_shebang():
    assert document_text("bin/tool", b"#!/usr/bin/env python3\nx = 1\n")["language"] == \
        "python"
    assert document_text("bin/run", b"#!/bin/bash\necho hi\n")["language"] == "shell"


def test_identifiers_split_into_words_however_they_are_spelled():
    assert split_identifier("parse_config") == ["parse", "config"]
    assert split_identifier("ParseConfig") == ["parse", "config"]
    assert split_identifier("HTTPServer2") == ["http", "server", "2"]
    assert split_identifier("getHTTPResponseCode") == ["get", "http", "response", "code"]
    assert split_identifier("HTTP_server") == ["http", "server"]
    assert split_identifier("x509Cert") == ["x", "509", "cert"]


def test_identifiers_in_any_script_split_where_case_or_digits_turn():
    assert split_identifier("größeBerechnen") == ["größe", "berechnen"]
    assert split_identifier("Größe2Wert") == ["größe", "2", "wert"]
    assert split_identifier("関数_名前") == ["関数", "名前"]
    assert identifier_parts("naïve parseConfig, größeBerechnen") == [
        "naïve", "parse", "config", "größe", "berechnen"]


def test_a_name_outside_ascii_is_squashed_as_its_whole_lowercase():
    final, medial = "\u03c2", "\u03c3"  # the two lowercase sigmas
    found = with_search_words(entry("function", "a\u03a3", 1))
    assert found["squashed"] == "a" + final  # Σ ends the whole name; the part alone is medial
    assert found["words"].split() == ["a", medial, "a" + final]


def parts_one_by_one(text: str) -> list[str]:
    """The words of a text's identifiers, found part by part between its separators."""
    separators, ascii_words = identifier_patterns()
    words = []
    for part in separators.split(text):
        words += ascii_words.findall(part) if part.isascii() else case_runs(part)
    return [word.lower() for word in words if word]


IDENTIFIER_CHARACTERS = "aAZz_09 $.-/\t\x7f\xe9\xc9\u95a2"


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from(IDENTIFIER_CHARACTERS), max_size=40))
def test_a_text_has_the_words_of_its_identifiers_split_part_by_part(text):
    assert identifier_parts(text) == parts_one_by_one(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127) | st.sampled_from("\xe9\xc9\u95a2"),
               max_size=60))
def test_a_path_has_the_identifier_words_of_its_folders_and_file_name(path):
    assert path_words(path).split() == parts_one_by_one(os.path.splitext(path)[0])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZq_09 \t\n.-/\x00\x7f"), max_size=80))
def test_an_ascii_text_has_the_words_of_the_word_pattern(text):
    tokens = dict.fromkeys(re.findall(r"\w+", text, re.ASCII))  # first occurrences first
    words = dict.fromkeys(token.lower() for token in tokens)
    split = [token for token in tokens if not token.islower() and not token.isdigit()]
    for token in split:
        words.update(dict.fromkeys(parts_one_by_one(token)))
    for token in split:  # and the runs of letters that end in digits (`utf8` of `utf8Decode`)
        words.update(dict.fromkeys(run.lower() for run in
                                   re.findall(r"(?:[A-Z]?[a-z]+|[A-Z]+)[0-9]+", token)))
    assert file_words(text) == " ".join(words)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZq_09$.:~<> \t\x7f\xe9\xc9\u95a2"), max_size=40))
def test_a_name_has_the_search_words_of_its_parts_one_by_one(name):
    squashed = squash(name)
    parts = parts_one_by_one(name)
    words = " ".join([*parts, squashed] if squashed and [squashed] != parts else parts)
    if not name.islower() and any(ch.isdigit() for ch in name):  # `utf8` of `utf8Decode` too
        runs = dict.fromkeys(run.lower() for run in
                             re.findall(r"(?:[A-Z]?[a-z]+|[A-Z]+)[0-9]+", name))
        words = " ".join([words, *(run for run in runs if run not in words.split())])
    marked = [word for word in dict.fromkeys([*words.split(), *re.split(r"[\W_]+", name.lower())])
              if marked_in_name(word)]
    found = with_search_words(entry("function", name, 1))
    assert (found["words"], found["squashed"]) == (words, squashed)
    assert found["named"] == " ".join(NAME_MARK + word for word in marked)


RULE_WORDS = ["export", "default", "declare", "async", "function", "function*", "class",
              "const", "let", "var", "=", "=>", "(", ")", "()", "{", "}", ":", ";", ",", "pub",
              "pub(crate)", "fn", "struct", "impl", "impl<T>", "for", "type", "func", "package",
              "interface", "enum", "trait", "mod", "macro_rules!", "unsafe", 'extern "C"', "def",
              "#define", "# define", "typedef", "static", "public", "abstract", "void", "int",
              "*", "&", "::", "namespace", "module.exports", "exports", ".", "prototype", "get",
              "name", "Foo", "x1", "$a", "?", "!", "<T>", "@interface", "record", "union",
              "sealed", "new", "return", "(a, b)", "(w *Writer)", "a.b", "final"]


# Lines that several rules of a language match (a receiver's method is a method too, a
# member's function value a property too): the first rule must win.
RULE_LINES = [
    "func (w *Writer) Write(p []byte) (int, error) {", "func (Writer) Close() error {",
    "func main() {", "type T struct {", "type I interface {", "type X int", "package foo",
    "export default async function foo() {", "const f = () => {", "const o = {",
    "module.exports = {", "a.b.c = function () {", "exports.run = 1", "name: function () {",
    "name(a) {", "name?: string;", "get name() {", "static async *gen() {", "interface I {",
    "type T<A> = {", "declare const enum E {", "namespace N {", "handler: (req) => {",
    "pub(crate) async unsafe fn f() {", "impl<T> Display for Foo<T> {", "pub struct S;",
    "macro_rules! m {", "pub trait T {", "mod m;", "type A = B;", "unsafe impl Send for X {}",
    "public static void main(String[] args) {", "public class A extends B {", "package a.b;",
    "@interface Ann {", "record R(int a) {", "sealed interface S permits A {",
    "#define X 1", "namespace a::b {", "typedef struct node {", "struct S {",
    "static int *f(void)", "int A::g(int x)", "virtual void h() = 0;",
    "typedef unsigned long size_t;", "class C final : public B {", "enum class E : int {",
    "function f {", "f() {", "my-func () {", "class A(B):", "async def f():", "def g(x):"]


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.sampled_from(RULE_LINES), st.builds(
           str.join, st.sampled_from(["", " "]), st.lists(st.sampled_from(RULE_WORDS),
                                                          max_size=9))),
       st.sampled_from(sorted(name for name, lang in LANGUAGES.items() if lang.rules)),
       st.booleans(), st.booleans())
def test_a_line_matches_the_first_of_its_rules_that_applies_as_one_by_one(
        code, name, indented, member):
    rules = LANGUAGES[name]
    expected = None
    for kind, rule, where in rules.rules:
        if (where == "top" and indented) or (where == "member" and not member):
            continue
        if callable(rule):
            found = rule(code)
            expected = found and (kind, *found)
        else:
            match = re.match(rule, code)
            expected = match and (kind, match["name"], match.groupdict().get("container") or "")
        if expected:
            break
    steps = plans(rules)[indented, member]
    found = next((hit for hit in (plan_match(step, code) for step in steps) if hit), None)
    assert found == (expected or None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(
    ["a.py", "a.js", "a.go", "a.rs", "A.java", "a.c", "a.sh", "a.md", "a.txt", "noext"]))
def test_the_documenter_never_raises_on_arbitrary_bytes(data, path):
    doc = document_text(path, data)
    assert set(doc) == {"language", "summary", "entries", "error", "words"}


QUOTED = r'"[^"]*"\*?'
TOGETHER = rf'\({QUOTED}(?: AND {QUOTED})+\)'  # the words of a token with digits, all of them
ONE = rf'(?:{QUOTED}|\({QUOTED}(?: OR (?:{QUOTED}|{TOGETHER}))+\))'
SAFE_FTS = re.compile(rf"{ONE}(?: {ONE})*")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_query_becomes_safe_fts_expressions_or_a_clear_error(query):
    try:
        terms = SearchQuery(query).terms
    except CqError as exc:
        assert "nothing to search for" in str(exc)
        return
    for term in terms:  # quoted strings, or a word's other forms as one group of ORs
        for expression in (term.entries, term.files):
            assert SAFE_FTS.fullmatch(expression), expression


def test_preprocessor_lines_are_not_doc_comments_in_c():
    source = "\n".join(f"#define REG_{i} {i}" for i in range(3000)).encode()
    doc = document_text("regs.h", source)
    assert len(names(doc, "constant")) == 3000  # a #define with a value is a constant
    assert all(e["doc"] == "" for e in doc["entries"])


def test_doc_comments_are_found_above_attributes_and_annotations():
    rust = document_text("a.rs", b"/// A point.\n#[derive(Debug)]\npub struct Point {}\n")
    assert find(rust, "Point")["doc"] == "A point."
    java = document_text("A.java", b"/** Greets. */\n@Deprecated\npublic class A {\n")
    assert find(java, "A")["doc"] == "Greets."


def test_a_doc_comment_is_capped_keeping_its_first_sentences():
    source = b"".join(b"// line %d\n" % i for i in range(1000)) + b"int f(void)\n{\n"
    doc = find(document_text("a.c", source), "f")["doc"]
    assert doc.startswith("line 0\nline 1\n")
    assert len(doc) <= DOC_COMMENT_MAX_CHARS and "line 999" not in doc


def test_c_definitions_with_trailing_block_comments_are_kept():
    doc = document_text("a.c", b"#define MAX 10 /* max */\nstruct foo { /* x */\n};\n"
                                  b"int x; /* trailing */\nint main(void)\n{\n}\n")
    assert names(doc) == ["MAX", "foo", "x", "main"]
    assert find(doc, "main")["doc"] == "" and find(doc, "x")["kind"] == "variable"


def test_sizes_in_config_take_git_suffixes():
    assert parse_config([("cq.maxfilesize", "2m")]).max_file_size == 2 << 20
    assert parse_config([("cq.maxfilesize", "512k")]).max_file_size == 512 << 10


MIB = 1 << 20
CEILING = 30.0  # seconds for 1 MiB; a quadratic documenter needs minutes (issue 6 measured)


def adversarial_inputs() -> dict[str, bytes]:
    """Inputs that made earlier documenters backtrack or rescan: long runs of spaces, unclosed
    comments and strings, deep nesting, one huge line, one line repeated, heredoc marks with
    no line after them."""
    return {
        "spaces": b" " * MIB,
        "spaces before a call": (b" " * 499 + b"a b(\n") * (MIB // 505),
        "spaces around a method": (b" " * 200 + b"a(): " + b" " * 200 + b"\n") * (MIB // 406),
        "heading lines": b"#a\n" * (MIB // 3),
        "type and spaces": (b"type a" + b" " * 400 + b"\n") * (MIB // 407),
        "unclosed comment": b"/*" + b"x\n" * (MIB // 2),
        "unclosed string": b'"' + b"a" * MIB,
        "deep nesting": b"(" * (MIB // 2) + b"{" * (MIB // 2),
        "one huge line": b"a b c(" * (MIB // 6),
        "one repeated line": b"int f(int a) {\n" * (MIB // 15),
        "annotations": b"@a\n" * (MIB // 3),
        "words before a paren": (b"a " * 240 + b"(\n") * (MIB // 483),
        "heredocs on a last line": b"f() {\n}\n" + b"<<a " * (MIB // 4),
        "return types on lines of their own": b"static int\nf (int a)\n" * (MIB // 20),
        "runs of brackets": b"x();[]{}\n" * (MIB // 10),
    }


@pytest.mark.parametrize("path", ["a.py", "a.js", "a.ts", "a.go", "a.rs", "A.java", "a.c",
                                  "a.cpp", "a.sh", "a.md", "a.txt"])
def test_every_documenter_finishes_adversarial_input_in_linear_time(path):
    for name, data in adversarial_inputs().items():
        started = time.monotonic()
        doc = document_text(path, data, budget=CEILING)
        elapsed = time.monotonic() - started
        assert "took more than" not in doc["error"], (path, name)
        assert elapsed < CEILING, (path, name, elapsed)


def test_a_file_past_its_time_budget_keeps_a_minimal_record_with_the_reason():
    source = b"/** Adds. */\nfunction add_numbers(a, b) {}\n" * 5000
    doc = document_text("big.js", source, budget=1e-9)
    assert doc["error"].startswith("took more than")
    assert doc["entries"] == [] and "add_numbers" in words(doc)


def test_a_chain_that_would_crash_the_parser_gets_a_record_instead():
    doc = document_text("chain.py", ("x = " + "+".join(["1"] * 150_000)).encode())
    assert doc["error"] and doc["language"] == "python"


def test_relative_imports_keep_their_dots():
    doc = document_text("pkg/mod.py", b"from . import sibling\nfrom ..up import thing\n"
                                          b"from .near import other\n")
    assert names(doc, "import") == [".sibling", "..up.thing", ".near.other"]


def test_module_flavours_of_javascript_and_typescript_are_known():
    assert [detect_language(p, "") for p in ("a.cjs", "a.mjs", "a.cts", "a.mts")] == \
        ["javascript", "javascript", "typescript", "typescript"]
