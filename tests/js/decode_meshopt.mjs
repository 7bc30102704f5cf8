// Decode the EXT_meshopt_compression buffer views of .glb files with meshoptimizer's own JavaScript decoder (the
// one CesiumJS uses); prints one JSON line per file: {"file", "views": {"<view index>": "<base64 of the decoded
// bytes>"}, "headers": [first byte of every compressed stream]}.
// Usage: node decode_meshopt.mjs FILE.glb...
import { readFile } from "node:fs/promises";
import { MeshoptDecoder } from "meshoptimizer";

await MeshoptDecoder.ready;
for (const file of process.argv.slice(2)) {
  const data = new Uint8Array(await readFile(file));
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const jsonLength = view.getUint32(12, true);
  const gltf = JSON.parse(new TextDecoder().decode(data.subarray(20, 20 + jsonLength)));
  const binStart = 20 + jsonLength + 8;
  const views = {};
  const headers = [];
  gltf.bufferViews.forEach((bufferView, index) => {
    const ext = (bufferView.extensions || {}).EXT_meshopt_compression;
    if (!ext) return;
    const start = binStart + (ext.byteOffset || 0);
    const source = data.subarray(start, start + ext.byteLength);
    const target = new Uint8Array(ext.count * ext.byteStride);
    MeshoptDecoder.decodeGltfBuffer(target, ext.count, ext.byteStride, source, ext.mode, ext.filter || "NONE");
    views[index] = Buffer.from(target).toString("base64");
    headers.push(source[0]);
  });
  console.log(JSON.stringify({ file, views, headers }));
}
