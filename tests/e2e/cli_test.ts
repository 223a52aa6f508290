/** The command line as operators and systemd see it: output, exit status, one clear error line. */
import assert from "node:assert/strict";
import { freePort, runFlowd, startDaemon } from "../helpers/daemon.ts";

Deno.test("cli: help says flowd-go and lists the commands; no command prints help and exits 0", async () => {
  for (const args of [["--help"], ["-h"], ["help"], []]) {
    const r = await runFlowd(args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^flowd-go: the SciTags flow and packet marking daemon/);
    assert.match(r.stdout, /Usage:\n {2}flowd-go \[flags\] <command>/);
    for (const c of ["run", "conf", "version", "help"]) assert.match(r.stdout, new RegExp(`\\n  ${c} `));
    assert.doesNotMatch(r.stdout, /glowd/);
  }
  const perCommand = await runFlowd(["help", "run"]);
  assert.match(perCommand.stdout, /^Usage: flowd-go \[flags\] run/);
  const flagAfter = await runFlowd(["conf", "--help"]);
  assert.match(flagAfter.stdout, /^Usage: flowd-go \[flags\] conf/);
});

Deno.test("cli: version prints the version and the commit", async () => {
  const r = await runFlowd(["version"]);
  assert.equal(r.code, 0);
  const m = /^built commit: (\S+)\nbase version: (\d+\.\d+\.\d+\S*)\n$/.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.notEqual(m[1], "");
  const git = await new Deno.Command("git", { args: ["rev-parse", "HEAD"], stdout: "piped", stderr: "null" })
    .output();
  if (git.success && !Deno.env.get("FLOWD_GO_BIN")) {
    assert.ok(m[1]!.startsWith(new TextDecoder().decode(git.stdout).trim()), `${m[1]} is not HEAD`);
  }
});

Deno.test("cli: usage errors exit 2 with one message", async () => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /unknown option '--bogus'/i],
    [["frobnicate"], /unknown command "frobnicate"/],
    [
      ["--log-level", "verbose", "version"],
      /invalid --log-level "verbose" \(use one of trace, debug, info, warn, error\)/,
    ],
    [["version", "extra"], /unexpected argument "extra"/],
    [["run", "--format", "json"], /--format only applies to "conf"/],
    [
      ["run", "--target-interface", "eth0"],
      /--target-interface and --remove-qdisc only apply to "marker clean"/,
    ],
    [["marker"], /"marker" needs a subcommand \(marker clean\)/],
    [["marker", "wipe"], /"marker" has no subcommand "wipe"/],
    [["marker", "clean", "--remove-qdisc=perhaps"], /invalid value "perhaps" for --remove-qdisc/],
  ];
  for (const [args, re] of cases) {
    const r = await runFlowd(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stdout, "");
  }
});

Deno.test("cli: conf prints the effective configuration with defaults, as YAML or JSON", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/c.yaml`, "plugins:\n  api: {}\n# nothing else\n");
    const y = await runFlowd(["--conf", `${dir}/c.yaml`, "conf"]);
    assert.equal(y.code, 0, y.stderr);
    assert.match(y.stdout, /pidPath: \/var\/run\/flowd-go\.pid/);
    assert.match(y.stdout, /api:\n {4}bindAddress: 127\.0\.0\.1\n {4}bindPort: 7777/);
    const j = await runFlowd(["conf", "--conf", `${dir}/c.yaml`, "--format", "json"]);
    assert.equal(j.code, 0);
    const parsed = JSON.parse(j.stdout);
    assert.deepEqual(parsed.plugins, {
      api: {
        bindAddress: "127.0.0.1",
        bindPort: 7777,
        maxConnections: 256,
        headerTimeout: 10,
        idleTimeout: 60,
        bodyTimeout: 30,
        enableDummyEndpoints: false,
      },
    });
    assert.equal(parsed.workDir, "/var/cache/flowd-go");
    // An empty file: all defaults (the original applied none).
    await Deno.writeTextFile(`${dir}/empty.yaml`, "---\n# all commented out\n");
    const e = await runFlowd(["--conf", `${dir}/empty.yaml`, "conf", "--format", "json"]);
    assert.equal(JSON.parse(e.stdout).pidPath, "/var/run/flowd-go.pid");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: --log-level debug logs what was parsed", async () => {
  const r = await runFlowd(["--conf", "builtin:quickstart", "--log-level", "debug", "conf"]);
  assert.equal(r.code, 0);
  assert.match(
    r.stderr,
    /level=DEBUG logger=run msg="configuration parsed" source=builtin:quickstart config=/,
  );
  const quiet = await runFlowd(["--conf", "builtin:quickstart", "conf"]);
  assert.doesNotMatch(quiet.stderr, /DEBUG/);
});

Deno.test("cli: --log-time adds a timestamp to log lines", async () => {
  const r = await runFlowd(["--conf", "/nonexistent.yaml", "--log-time", "conf"]);
  assert.match(r.stderr, /^time=\d{4}-\d{2}-\d{2}T\S+ level=ERROR/);
});

Deno.test("cli: configuration errors exit 1 with one line naming key and line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/bad.yaml`, "plugins:\n  api:\n    bindPrt: 7777\n");
    for (const cmd of ["conf", "run"]) {
      const r = await runFlowd(["--conf", `${dir}/bad.yaml`, cmd]);
      assert.equal(r.code, 1, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(
        lines[0]!,
        /level=ERROR .*bad\.yaml:3: unknown key plugins\.api\.bindPrt \(did you mean bindPort\?\)/,
      );
    }
    const missing = await runFlowd(["--conf", `${dir}/nope.yaml`, "run"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read the configuration file .*nope\.yaml: no such file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a missing default configuration suggests the built-in one", async () => {
  // Only meaningful where /etc/flowd-go/conf.yaml does not exist (a development machine or CI).
  const exists = await Deno.lstat("/etc/flowd-go/conf.yaml").then(() => true, () => false);
  if (exists) return console.error("SKIPPED: /etc/flowd-go/conf.yaml exists here");
  const r = await runFlowd(["conf"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--conf builtin:quickstart/);
});

Deno.test("cli: a failure to start exits 1, names the cause and leaves no PID file or FIFO", async () => {
  const dir = await Deno.makeTempDir();
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (busy.addr as Deno.NetAddr).port;
    await Deno.writeTextFile(
      `${dir}/c.yaml`,
      `pidPath: ${dir}/pid\nworkDir: ${dir}\nplugins:\n  namedPipe: {pipePath: np}\n  api: {bindPort: ${port}}\nbackends:\n  firefly: {}\n`,
    );
    const r = await runFlowd(["--conf", `${dir}/c.yaml`, "run"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /level=ERROR .*127\.0\.0\.1:\d+/);
    await assert.rejects(() => Deno.lstat(`${dir}/pid`), Deno.errors.NotFound);
    await assert.rejects(() => Deno.lstat(`${dir}/np`), Deno.errors.NotFound);
  } finally {
    busy.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a second instance with the same PID file refuses to start", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const conf = `${dir}/c.yaml`;
    await Deno.writeTextFile(
      conf,
      `pidPath: ${dir}/pid\nworkDir: ${dir}\nplugins:\n  api: {bindPort: ${freePort()}}\nbackends:\n  firefly: {sendToDestination: false}\n`,
    );
    await using first = await startDaemon(conf);
    const second = await runFlowd(["--conf", conf, "run"]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`another flowd-go is running \\(pid ${first.process.pid}\\)`));
    assert.equal(
      await Deno.readTextFile(`${dir}/pid`),
      `${first.process.pid}\n`,
      "the first one's PID file is untouched",
    );
    assert.equal(await first.stop(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: a stale PID file from a killed daemon does not block the next start", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const conf = `${dir}/c.yaml`;
    await Deno.writeTextFile(
      conf,
      `pidPath: ${dir}/pid\nworkDir: ${dir}\nplugins:\n  namedPipe: {pipePath: np}\nbackends:\n  firefly: {sendToDestination: false}\n`,
    );
    {
      await using killed = await startDaemon(conf);
      assert.notEqual(await killed.stop("SIGKILL"), 0);
    }
    assert.ok(await Deno.lstat(`${dir}/pid`), "SIGKILL leaves the PID file behind");
    await using again = await startDaemon(conf); // reuses the leftover FIFO too
    assert.equal(await again.stop(), 0);
    await assert.rejects(() => Deno.lstat(`${dir}/np`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
