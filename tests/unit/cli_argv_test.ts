/** The command-line splitter (src/cli/argv.ts) and parseCli on top of it. */
import assert from "node:assert/strict";
import { splitArgs } from "../../src/cli/argv.ts";
import { parseCli } from "../../src/cli/args.ts";
import { UsageError } from "../../src/core/errors.ts";

const SPECS = {
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
  conf: { type: "string", short: "c" },
  tag: { type: "string", multiple: true },
} as const;

Deno.test("argv: flags in every accepted form, positionals kept in order", () => {
  const r = splitArgs(
    ["run", "--conf", "a.yaml", "-hv", "--tag=x", "-", "--tag", "y", "--conf=b=c", "extra"],
    SPECS,
  );
  assert.deepEqual(r.positionals, ["run", "-", "extra"]);
  assert.deepEqual(r.values, { conf: "b=c", help: true, verbose: true, tag: ["x", "y"] });
  assert.deepEqual(splitArgs(["-cfile", "-v"], SPECS).values, { conf: "file", verbose: true });
  assert.deepEqual(splitArgs(["-c", "file"], SPECS).values, { conf: "file" });
  assert.deepEqual(splitArgs(["--conf=", "x"], SPECS).values, { conf: "" });
  assert.deepEqual(splitArgs(["--conf=-x"], SPECS).values, { conf: "-x" });
});

Deno.test("argv: -- ends the flags", () => {
  const r = splitArgs(["-v", "--", "--help", "-h"], SPECS);
  assert.deepEqual(r.values, { verbose: true });
  assert.deepEqual(r.positionals, ["--help", "-h"]);
});

Deno.test("argv: unknown flags, values for booleans and missing values are usage errors naming the flag", () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^unknown option '--bogus'$/],
    [["--bogus=1"], /^unknown option '--bogus'$/],
    [["-x"], /^unknown option '-x'$/],
    [["-vx"], /^unknown option '-x'$/],
    [["--help=yes"], /^option '--help' takes no value$/],
    [["--conf"], /^option '--conf' needs a value$/],
    [["--conf", "--help"], /^option '--conf' needs a value$/],
    [["-c"], /^option '-c' needs a value$/],
    [["--constructor"], /^unknown option '--constructor'$/],
    [["--toString"], /^unknown option '--toString'$/],
  ];
  for (const [argv, re] of cases) {
    assert.throws(
      () => splitArgs(argv, SPECS),
      (e: unknown) => e instanceof UsageError && re.test(e.message),
    );
  }
});

Deno.test("parseCli: global flags before or after the command, repeated flags, two-word commands", () => {
  const a = parseCli([
    "--log-level",
    "debug",
    "marker",
    "clean",
    "--target-interface",
    "a",
    "--target-interface=b",
  ]);
  assert.equal(a.command, "marker clean");
  assert.equal(a.logLevel, "debug");
  assert.deepEqual(a.targetInterfaces, ["a", "b"]);
  assert.equal(a.removeQdisc, true);
  const b = parseCli(["conf", "--conf", "/x.yaml", "--format=json", "--log-time=true"]);
  assert.equal(b.command, "conf");
  assert.equal(b.conf, "/x.yaml");
  assert.equal(b.confGiven, true);
  assert.equal(b.format, "json");
  assert.equal(b.logTime, true);
  assert.equal(parseCli(["-h", "run"]).help, true);
  assert.equal(parseCli(["marker", "clean", "--remove-qdisc=false"]).removeQdisc, false);
  assert.deepEqual(parseCli(["help", "marker", "clean"]).rest, ["marker", "clean"]);
  assert.throws(() => parseCli(["--bogus", "run"]), /unknown option '--bogus'/);
  assert.throws(() => parseCli(["run", "--conf"]), /option '--conf' needs a value/);
  assert.throws(() => parseCli(["--conf="]), /--conf needs a path/);
});
