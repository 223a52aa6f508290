/** Every BPF program of the daemon is embedded, in both variants, as the object scripts/build_bpf.sh built. */
import assert from "node:assert/strict";
import { BPF_PROGRAM_NAMES, type BpfVariant, embeddedBpfObject } from "../../src/bpf_objects.ts";

const BPF_DIR = new URL("../../bpf/", import.meta.url);

/** ELF64, little endian, e_machine EM_BPF (247). */
function isBpfElf(bytes: Uint8Array): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return bytes.length > 64 && view.getUint32(0) === 0x7f454c46 && bytes[4] === 2 && bytes[5] === 1 &&
    view.getUint16(18, true) === 247;
}

Deno.test("bpf objects: every bpf/*.bpf.c but the benchmarks' and tests' is embedded, no entry lacks a source", () => {
  const sources = [...Deno.readDirSync(BPF_DIR)]
    .filter((e) => e.isFile && e.name.endsWith(".bpf.c") && !/^(bench|test)_/.test(e.name))
    .map((e) => e.name.slice(0, -".bpf.c".length))
    .sort();
  assert.deepEqual([...BPF_PROGRAM_NAMES].sort(), sources, "src/bpf_objects.ts must import every program");
});

Deno.test("bpf objects: the embedded bytes are the built objects, release and debug differ", () => {
  for (const name of BPF_PROGRAM_NAMES) {
    const seen: Uint8Array[] = [];
    for (const variant of ["release", "debug"] as BpfVariant[]) {
      const o = embeddedBpfObject(name, variant);
      const file = `${name}${variant === "debug" ? "-dbg" : ""}.bpf.o`;
      assert.ok(isBpfElf(o.bytes), `${file} is not a BPF ELF object`);
      assert.deepEqual(o.bytes, Deno.readFileSync(new URL(`build/${file}`, BPF_DIR)), file);
      assert.equal(o.label, `embedded ${file}`);
      seen.push(o.bytes);
    }
    assert.notDeepEqual(seen[0], seen[1], `${name}: the debug object equals the release one`);
  }
});

Deno.test("bpf objects: no module reads bpf/build at run time", async () => {
  const offenders: string[] = [];
  const walk = async (dir: URL) => {
    for await (const e of Deno.readDir(dir)) {
      const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
      if (e.isDirectory) await walk(url);
      else if (e.name.endsWith(".ts") && !url.pathname.endsWith("/src/bpf_objects.ts")) {
        if ((await Deno.readTextFile(url)).includes("bpf/build/")) offenders.push(url.pathname);
      }
    }
  };
  await walk(new URL("../../src/", import.meta.url));
  await walk(new URL("../../ffi/", import.meta.url));
  assert.deepEqual(offenders, []);
});
