// Parses an AsyncAPI document with the official parser; prints its diagnostics as JSON lines
// and exits 1 when one is an error. Usage: node validate.cjs NODE_MODULES_DIR FILE
const fs = require("fs");
const path = require("path");
const { Parser } = require(path.join(process.argv[2], "@asyncapi", "parser"));

(async () => {
  const text = fs.readFileSync(process.argv[3], "utf8");
  const { document, diagnostics } = await new Parser().parse(text);
  for (const d of diagnostics) {
    console.log(JSON.stringify({ severity: d.severity, code: d.code, path: d.path, message: d.message }));
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (!document || errors.length) process.exit(1);
  console.log(JSON.stringify({ title: document.info().title(), channels: document.channels().length, operations: document.operations().length }));
})();
