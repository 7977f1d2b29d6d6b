// Parses and semantically analyses KQL queries with Kusto.Language, Microsoft's Kusto language
// service (npm @kusto/language-service-next: the C# library compiled to JavaScript with
// Bridge.NET), against given table schemas. Used by tests/test_infra_kql.py.
//
// stdin: one check or a list of checks, each
//   {"tables": {"AppMetrics": "(TimeGenerated:datetime, Name:string, ...)", ...},
//    "queries": {"name": "query text", ...}}
// (the tables form the one database the check's queries run in); query names are unique over
// all checks.
// stdout: {"name": {"errors": ["Error: message @offset (the text there)", ...],
//                   "columns": {"column": "type", ...}}, ...}: every query, with its
// Error-severity diagnostics (syntax and semantics: unknown names, wrong types, wrong
// arguments), none for a valid query, and the columns of its result (empty when the result is
// not a table), which a log search alert's dimensions must name. Warnings and suggestions (performance advice of the
// analyzers) are not reported: Azure accepts such a query. Exit status 0 unless the input is
// unreadable or the package is missing.

"use strict";

const path = require("path");

const ROOT = path.resolve(__dirname, "..", "..");
const PACKAGE = "@kusto/language-service-next";

function load() {
  // The package is two scripts: bridge.js (the Bridge.NET runtime, expected as a global) and
  // the library, which defines the global Kusto.
  const resolve = (file) => require.resolve(`${PACKAGE}/${file}`, { paths: [ROOT] });
  global.Bridge = require(resolve("bridge.js"));
  require(resolve("Kusto.Language.Bridge.js"));
  return global.Kusto.Language;
}

function readStdin() {
  return require("fs").readFileSync(0, "utf8");
}

function around(text, start, length) {
  // The diagnostic's own text, or a few characters either side of an empty span.
  const from = length > 0 ? start : Math.max(0, start - 15);
  const to = length > 0 ? start + length : Math.min(text.length, start + 15);
  return text.slice(from, to).replace(/\s+/g, " ").trim();
}

function main() {
  const Language = load();
  const Symbols = Language.Symbols;
  const input = JSON.parse(readStdin());
  const checks = Array.isArray(input) ? input : [input];
  const result = {};
  for (const check of checks) {
    const tables = Object.entries(check.tables).map(([name, schema]) => {
      const table = Symbols.TableSymbol.From(schema).WithName(name);
      // From() drops what it cannot read: every column of the schema must be there.
      const expected = schema.split(",").length;
      if (table.Columns.Count !== expected) {
        throw new Error(`${name}: ${table.Columns.Count} of the ${expected} columns of ${schema} were read`);
      }
      return table;
    });
    const database = new Symbols.DatabaseSymbol.ctor("workspace", tables);
    const globals = Language.GlobalState.Default.WithDatabase(database);
    for (const [name, query] of Object.entries(check.queries)) {
      if (name in result) throw new Error(`duplicate query name: ${name}`);
      const code = Language.KustoCode.ParseAndAnalyze(query, globals);
      const diagnostics = code.GetDiagnostics();
      const errors = [];
      for (let i = 0; i < diagnostics.Count; i++) {
        const d = diagnostics.getItem(i);
        if (d.Severity !== "Error") continue;
        errors.push(`${d.Severity}: ${d.Message} @${d.Start} (${around(query, d.Start, d.Length)})`);
      }
      const columns = {};
      const type = code.ResultType;
      if (type && type.Columns) {
        for (let i = 0; i < type.Columns.Count; i++) {
          const column = type.Columns.getItem(i);
          columns[column.Name] = column.Type.Name;
        }
      }
      result[name] = { errors, columns };
    }
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

main();
