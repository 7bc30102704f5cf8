// Validate .glb files with the Khronos glTF validator; prints one JSON report per line:
// {"file", "numErrors", "numWarnings", "numInfos", "messages": [...errors and warnings...]}.
// Usage: node validate_gltf.mjs FILE.glb...
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

let failed = false;
for (const file of process.argv.slice(2)) {
  const data = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(data, { uri: file, maxIssues: 200 });
  const messages = report.issues.messages
    .filter((m) => m.severity <= 1)
    .map((m) => ({ code: m.code, severity: m.severity, message: m.message, pointer: m.pointer }));
  const out = {
    file,
    numErrors: report.issues.numErrors,
    numWarnings: report.issues.numWarnings,
    numInfos: report.issues.numInfos,
    messages,
  };
  if (out.numErrors > 0) failed = true;
  console.log(JSON.stringify(out));
}
process.exit(failed ? 1 : 0);
