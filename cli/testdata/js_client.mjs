// Drives `heft serve` with @huggingface/hub: listFiles, downloadFile (whole and
// a slice), uploadFiles (a small and a large file), then downloads the upload back.
// Prints JSON with the sha256 of everything it downloaded.
// Usage: node js_client.mjs ENDPOINT TOKEN SPEC.json
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { listFiles, downloadFile, uploadFiles, createRepo } from "@huggingface/hub";

const [endpoint, token, specPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, "utf8"));
const sha = (buf) => createHash("sha256").update(buf).digest("hex");
const out = { listed: {}, downloaded: {}, uploaded: {} };

for (const name of spec.download) {
  const repo = { type: "model", name };
  const files = [];
  for await (const f of listFiles({ repo, recursive: true, hubUrl: endpoint, accessToken: token })) {
    if (f.type === "file") files.push(f.path);
  }
  out.listed[name] = files.sort();
  out.downloaded[name] = {};
  for (const path of files) {
    const blob = await downloadFile({ repo, path, hubUrl: endpoint, accessToken: token });
    out.downloaded[name][path] = sha(Buffer.from(await blob.arrayBuffer()));
  }
  // A slice of the largest file, as JS readers do for safetensors headers.
  const big = files.find((p) => p.endsWith(".safetensors"));
  const blob = await downloadFile({ repo, path: big, hubUrl: endpoint, accessToken: token });
  const slice = Buffer.from(await blob.slice(8, 8 + 4096).arrayBuffer());
  out.downloaded[name]["slice:" + big] = sha(slice);
}

const repo = { type: "model", name: spec.upload_repo };
await createRepo({ repo, hubUrl: endpoint, accessToken: token }).catch((e) => {
  if (!String(e).includes("already")) throw e;
});
const uploads = spec.upload_files.map((p) => ({ path: p.split("/").pop(), content: new Blob([readFileSync(p)]) }));
await uploadFiles({ repo, files: uploads, hubUrl: endpoint, accessToken: token, useXet: false, commitTitle: "upload from @huggingface/hub" });
for (const u of uploads) {
  const blob = await downloadFile({ repo, path: u.path, hubUrl: endpoint, accessToken: token });
  out.uploaded[u.path] = sha(Buffer.from(await blob.arrayBuffer()));
}
console.log(JSON.stringify(out));
