/**
 * The struct layouts ffi/libbpf.ts builds by hand match the C headers it binds to: a small C program,
 * generated from the same table, prints sizeof/offsetof as the compiler sees them.
 */
import assert from "node:assert/strict";
import { LAYOUT } from "../../ffi/libbpf.ts";
import { hasCommand } from "../helpers/privileged.ts";

const compiler = ["cc", "clang", "gcc"].find(hasCommand);
const headers = (() => {
  try {
    return Deno.statSync("/usr/include/bpf/libbpf.h").isFile;
  } catch {
    return false;
  }
})();
const skip = !compiler || !headers;
if (skip) console.error("SKIPPED (needs a C compiler and libbpf-dev headers): libbpf struct layouts");

/** C member names where the table uses another key. */
const MEMBER: Record<string, string> = { union: "raw_tracepoint" };

Deno.test({
  name: `libbpf layouts: sizes and offsets match libbpf's and the uapi headers${skip ? " [SKIPPED]" : ""}`,
  ignore: skip,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const lines: string[] = [];
      for (const [struct, fields] of Object.entries(LAYOUT)) {
        for (const field of Object.keys(fields)) {
          const expr = field === "size"
            ? `sizeof(struct ${struct})`
            : `offsetof(struct ${struct}, ${MEMBER[field] ?? field})`;
          lines.push(`  printf("%s %s %zu\\n", "${struct}", "${field}", (size_t)${expr});`);
        }
      }
      const source = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <linux/bpf.h>",
        "#include <bpf/libbpf.h>",
        "#include <bpf/bpf.h>",
        "int main(void) {",
        ...lines,
        "  return 0;",
        "}",
      ].join("\n");
      await Deno.writeTextFile(`${dir}/layout.c`, source);
      const build = await new Deno.Command(compiler!, { args: ["-o", `${dir}/layout`, `${dir}/layout.c`] })
        .output();
      assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
      const run = await new Deno.Command(`${dir}/layout`).output();
      const actual: Record<string, Record<string, number>> = {};
      for (const line of new TextDecoder().decode(run.stdout).trim().split("\n")) {
        const [struct, field, value] = line.split(" ");
        (actual[struct!] ??= {})[field!] = Number(value);
      }
      assert.deepEqual(actual, LAYOUT);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
