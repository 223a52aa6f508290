/** The shell completion files the RPM installs: they know every command, and bash completes as it should. */
import assert from "node:assert/strict";
import { COMMANDS } from "../../src/cli/args.ts";

const BASH = new URL("../../completions/flowd-go.bash", import.meta.url).pathname;
const ZSH = new URL("../../completions/_flowd-go", import.meta.url).pathname;

/** What bash offers for the words typed so far (the last one being completed). */
async function complete(...words: string[]): Promise<string[]> {
  const script = `source ${JSON.stringify(BASH)}
COMP_WORDS=(flowd-go ${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length}
_flowd_go; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const out = await new Deno.Command("bash", { args: ["-c", script], stdout: "piped", stderr: "piped" })
    .output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).sort();
}

Deno.test("completions: bash offers commands, subcommands, flags and fixed values", async () => {
  assert.deepEqual(await complete("f"), ["flows"]);
  assert.deepEqual(await complete("d"), ["doctor"]);
  assert.deepEqual(await complete("marker", ""), ["clean"]);
  assert.deepEqual(await complete("flows", "--format", ""), ["json", "table"]);
  assert.deepEqual(await complete("conf", "--format", ""), ["json", "yaml"]);
  assert.deepEqual(await complete("--log-level", "w"), ["warn"]);
  assert.deepEqual(await complete("--conf", "/etc/x.yaml", "status", "--s"), ["--socket"]);
  assert.ok((await complete("flows", "--")).includes("--watch"));
});

Deno.test("completions: bash and zsh know every command of the CLI", async () => {
  const firstWords = [...new Set(COMMANDS.map((c) => c.split(" ")[0]!))].sort();
  assert.deepEqual(
    await complete(""),
    [
      ...firstWords,
      "--conf",
      "--help",
      "--log-level",
      "--log-time",
      "-h",
    ].sort(),
  );
  const zsh = await Deno.readTextFile(ZSH);
  for (const w of firstWords) assert.match(zsh, new RegExp(`'${w}:`), `zsh lacks ${w}`);
});
