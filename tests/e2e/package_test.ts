/**
 * The package as operators get it. scripts/package.sh builds the RPM once (the form this machine can build:
 * the fallback unless a denort archive is at hand); then the RPM is listed, unpacked with rpm2cpio into a
 * scratch root, and what is inside runs from there with no source tree around: the CLI, a short daemon run
 * on loopback, the end-to-end tests against the unpacked binary, the unit's verification and security score,
 * the man page, and (as root) the unit's sandbox, credentials and system call filter with the real program.
 */
import assert from "node:assert/strict";
import { isRoot } from "../helpers/privileged.ts";
import { freePort, superviseProcess, udpReceiver } from "../helpers/daemon.ts";
import { createVethPair } from "../helpers/netns.ts";
import { createTestCgroup } from "../helpers/cgroup.ts";
import { checkInBootedDebian } from "./booted_unit_checks.ts";
import {
  allowedSyscalls,
  createUnitSandbox,
  parseUnit,
  serviceValue,
  traceSummary,
} from "../helpers/unit_sandbox.ts";

const HERE = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const TOOLS = [
  "rpmbuild",
  "rpm",
  "rpm2cpio",
  "cpio",
  "pandoc",
  "man",
  "systemd-analyze",
  "git",
  "zip",
  "unzip",
];
const missing = TOOLS.filter((t) => !onPath(t));
const ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function onPath(cmd: string): boolean {
  return (Deno.env.get("PATH") ?? "").split(":").some((d) => {
    try {
      return Deno.statSync(`${d}/${cmd}`).isFile;
    } catch {
      return false;
    }
  });
}

async function run(
  argv: string[],
  opts: { env?: Record<string, string>; clearEnv?: boolean; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: opts.env,
    clearEnv: opts.clearEnv,
    cwd: opts.cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

async function ok(argv: string[], opts: Parameters<typeof run>[1] = {}): Promise<string> {
  const r = await run(argv, opts);
  assert.equal(r.code, 0, `${argv.join(" ")} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** argv prefix that hides the source tree and the toolchain (root only: a private mount namespace). */
function hidingPrefix(): string[] {
  if (!isRoot) return [];
  const hide = [HERE, "/root", "/home"].join(" ");
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    `for p in ${hide}; do [ -d "$p" ] && mount -t tmpfs -o ro,mode=0755 hidden "$p"; done; exec "$@"`,
    "hide",
  ];
}

/**
 * argv prefix that hides the built BPF objects (root only: an empty tmpfs over bpf/build in a private mount
 * namespace), so a package build sees the tree as a fresh clone has it.
 */
function freshClonePrefix(): string[] {
  if (!isRoot) return [];
  return [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    `mkdir -p "${HERE}/bpf/build" && mount -t tmpfs -o mode=0755 fresh "${HERE}/bpf/build" && exec "$@"`,
    "fresh",
  ];
}

/**
 * argv prefix that joins a named network namespace and nothing else: unlike `ip netns exec`, which mounts a
 * fresh /sys, it keeps the host's cgroup2 mount visible for the sock_ops programs.
 */
function netOnly(ns: string): string[] {
  return ["nsenter", `--net=/run/netns/${ns}`];
}

function waitFor(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return (async () => {
    while (!(await pred())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
}

if (missing.length) {
  console.error(`SKIPPED (needs ${missing.join(", ")}; scripts/setup.sh installs them as root)`);
}

Deno.test({
  name: `package: the RPM builds offline, and what it installs runs on its own${
    missing.length ? " [SKIPPED: needs " + missing.join(", ") + "]" : ""
  }`,
  ignore: missing.length > 0,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const scratch = await Deno.makeTempDir({ prefix: "flowd-go-package-test-" });
    try {
      await chmodTree(scratch);
      const denoJson = JSON.parse(await Deno.readTextFile(`${HERE}/deno.json`));
      const version: string = denoJson.version;
      const rpmVersion = version.replaceAll("-", "~");
      const commit = (await ok(["git", "-C", HERE, "describe", "--always", "--dirty", "--abbrev=40"])).trim();

      // ---- the build ---------------------------------------------------------------------------------
      // As on a brand-new machine: an empty HOME, Deno cache and toolchain directory of its own (setup.sh
      // installs Deno again from npm, the vendored cache is made from nothing), and, as root, no BPF
      // objects (bpf/build hidden under an empty tmpfs in a private mount namespace), as in a fresh clone.
      const fresh = `${scratch}/fresh-home`;
      await Deno.mkdir(fresh);
      const started = Date.now();
      const built = await run(
        [...freshClonePrefix(), "bash", `${HERE}/scripts/package.sh`, "--out", `${scratch}/rpmbuild`],
        {
          clearEnv: true,
          env: {
            // The rest of the environment stays (certificate settings, PATH); nothing of ours does.
            ...Object.fromEntries(
              Object.entries(Deno.env.toObject()).filter(([k]) =>
                !k.startsWith("DENO_") && !k.startsWith("FLOWD_GO_") && !k.startsWith("npm_")
              ),
            ),
            HOME: fresh,
            FLOWD_GO_TOOLCHAIN: `${fresh}/toolchain`,
            NO_COLOR: "1",
          },
        },
      );
      assert.doesNotMatch(
        built.stderr,
        /No such file|cannot stat/,
        "package.sh read something it never made",
      );
      assert.match(built.stderr, /installing deno/, "the build did not start from an empty toolchain");
      assert.equal(built.code, 0, `scripts/package.sh failed:\n${built.stderr}`);
      const rpmFile = built.stdout.trim().split("\n").at(-1)!;
      const form = /FALLBACK form/.test(built.stderr) ? "bundle" : "compile";
      console.error(
        `package: ${rpmFile.split("/").at(-1)}, ${form} form, ${
          ((await Deno.stat(rpmFile)).size / 1e6).toFixed(1)
        } MB, built in ${((Date.now() - started) / 1000).toFixed(0)} s`,
      );
      if (isRoot) assert.match(built.stderr, /empty network namespace/, "the build did not run offline");

      await t.step("rpm -qlp lists exactly what operators get, with the right metadata", async () => {
        const listed = (await ok(["rpm", "-qlp", rpmFile])).trim().split("\n").sort();
        // The bundle form's program is split into chunks with content-hashed names: main.js and *.js only.
        const APP = "/usr/libexec/flowd-go/app/";
        const chunks = listed.filter((f) => f.startsWith(APP));
        const files = listed.filter((f) => !f.startsWith(APP));
        const runtime = form === "bundle"
          ? ["/usr/libexec/flowd-go", "/usr/libexec/flowd-go/deno", APP.slice(0, -1)]
          : [];
        if (form === "bundle") {
          assert.ok(chunks.includes(`${APP}main.js`), `no ${APP}main.js in ${chunks.join(" ")}`);
          for (const c of chunks) assert.match(c.slice(APP.length), /^[\w-]+\.js$/, `unexpected file ${c}`);
          assert.ok(chunks.length > 10, `only ${chunks.length} chunks: the bundle is not split per command`);
        } else {
          assert.deepEqual(chunks, []);
        }
        assert.deepEqual(
          files,
          [
            "/etc/flowd-go",
            "/etc/flowd-go/conf.yaml",
            "/usr/bin/flowd-go",
            "/usr/lib/systemd/system/flowd-go.service",
            ...runtime,
            `/usr/share/doc/flowd-go-${rpmVersion}`,
            `/usr/share/doc/flowd-go-${rpmVersion}/README.md`,
            "/usr/share/man/man1/flowd-go.1.gz",
            "/usr/share/bash-completion/completions/flowd-go",
            "/usr/share/zsh/site-functions/_flowd-go",
          ].sort(),
        );
        const meta = await ok(["rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}\\n", rpmFile]);
        assert.equal(meta.trim(), `flowd-go ${rpmVersion} x86_64`);
        const flags = await ok([
          "rpm",
          "-qp",
          "--qf",
          "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\\n]",
          rpmFile,
        ]);
        assert.match(
          flags,
          /^\/etc\/flowd-go\/conf\.yaml cn -rw-r--r--$/m,
          "conf.yaml must be %config(noreplace)",
        );
        assert.match(flags, /^\/usr\/bin\/flowd-go\s+-rwxr-xr-x$/m);
        const requires = await ok(["rpm", "-qp", "--requires", rpmFile]);
        assert.match(requires, /^libbpf\.so\.1\(\)\(64bit\)$/m, "must require the libbpf it loads");
        const scripts = await ok(["rpm", "-qp", "--scripts", rpmFile]);
        assert.match(scripts, /postinstall[\s\S]*systemctl[\s\S]*preset flowd-go\.service/);
        assert.match(scripts, /preuninstall[\s\S]*disable --now flowd-go\.service/);
        assert.match(scripts, /postuninstall[\s\S]*try-restart flowd-go\.service/);
      });

      // ---- unpacked ----------------------------------------------------------------------------------
      const root = `${scratch}/root`;
      await Deno.mkdir(root);
      await ok(["sh", "-c", `rpm2cpio "$0" | cpio -idm --quiet`, rpmFile], { cwd: root });
      const bin = `${root}/usr/bin/flowd-go`;
      const clean = (
        argv: string[],
      ) => [...hidingPrefix(), "env", "-i", `PATH=${ENV_PATH}`, `HOME=${root}`, ...argv];

      await t.step("the unpacked flowd-go runs with no source tree around: version, help, conf", async () => {
        const v = await ok(clean([bin, "version"]), { cwd: root });
        assert.equal(v, `built commit: ${commit}\nbase version: ${version}\n`);
        const help = await ok(clean([bin, "--help"]), { cwd: root });
        for (const c of ["run", "conf", "marker clean", "stun sample", "version", "help"]) {
          assert.match(help, new RegExp(`\\n  ${c} `), `help lacks ${c}`);
        }
        // The shipped configuration, as installed: it parses and enables a sensible daemon.
        const conf = JSON.parse(
          await ok(clean([bin, "--conf", `${root}/etc/flowd-go/conf.yaml`, "conf", "--format", "json"]), {
            cwd: root,
          }),
        );
        assert.equal(conf.pidPath, "/run/flowd-go/flowd-go.pid");
        assert.equal(conf.workDir, "/var/cache/flowd-go");
        assert.equal(conf.plugins.namedPipe.pipePath, "/run/flowd-go/np");
        assert.deepEqual(
          [conf.plugins.api.bindAddress, conf.plugins.api.bindPort, conf.plugins.api.enableDummyEndpoints],
          ["127.0.0.1", 7777, false],
        );
        assert.equal(conf.backends.firefly.sendToDestination, true);
        if (form === "bundle") {
          // A code cache in the caller's private cache directory, none where another user could write.
          const home = await Deno.makeTempDir({ dir: scratch, prefix: "home-" });
          await ok([...hidingPrefix(), "env", "-i", `PATH=${ENV_PATH}`, `HOME=${home}`, bin, "version"]);
          assert.ok(
            (await Deno.stat(`${home}/.cache/flowd-go/deno`)).isDirectory,
            "no code cache in ~/.cache",
          );
          assert.equal((await Deno.stat(`${home}/.cache/flowd-go`)).mode! & 0o077, 0, "cache not private");
          const off = await Deno.makeTempDir({ dir: scratch, prefix: "home-off-" });
          await ok([
            ...hidingPrefix(),
            "env",
            "-i",
            `PATH=${ENV_PATH}`,
            `HOME=${off}`,
            "FLOWD_GO_CODE_CACHE=off",
            bin,
            "version",
          ]);
          const shared = await Deno.makeTempDir({ dir: scratch, prefix: "home-shared-" });
          await Deno.chmod(shared, 0o1777);
          await ok([...hidingPrefix(), "env", "-i", `PATH=${ENV_PATH}`, `HOME=${shared}`, bin, "version"]);
          for (const h of [off, shared]) {
            assert.deepEqual([...Deno.readDirSync(h)], [], `${h}: a code cache where there must be none`);
          }
          const launcher = await Deno.readTextFile(bin);
          assert.match(launcher, /--cached-only/);
          assert.doesNotMatch(
            launcher,
            new RegExp(HERE.replaceAll("/", "\\/")),
            "the launcher names the source tree",
          );
        }
      });

      await t.step(
        "a short run on loopback: pipe and API flows become fireflies; SIGTERM stops it cleanly",
        async () => {
          await using collector = await udpReceiver("127.0.0.1");
          const dir = `${scratch}/short-run`;
          await Deno.mkdir(dir);
          const apiPort = freePort();
          await Deno.writeTextFile(
            `${dir}/conf.yaml`,
            `pidPath: ${dir}/flowd-go.pid
workDir: ${dir}
plugins:
  namedPipe: {pipePath: np, pipeMode: "0600"}
  api: {bindAddress: 127.0.0.1, bindPort: ${apiPort}, enableDummyEndpoints: true}
backends:
  firefly: {sendToDestination: false, sendToCollector: true, collectorAddress: 127.0.0.1, collectorPort: ${collector.port}}
`,
          );
          const argv = clean([bin, "--conf", `${dir}/conf.yaml`, "run"]);
          await using daemon = superviseProcess(argv[0]!, argv.slice(1));
          await daemon.waitForLine(/msg="let's go!"/);
          const pipe = await Deno.open(`${dir}/np`, { write: true });
          await pipe.write(new TextEncoder().encode("start tcp 2001:db8::1 2345 2001:db8::2 5777 2 9\n"));
          pipe.close();
          const r = await fetch(`http://127.0.0.1:${apiPort}/dummy/start`);
          assert.equal(r.status, 200);
          await r.body?.cancel();
          const fireflies = await collector.waitFor(2);
          for (const f of fireflies) {
            assert.match(
              f,
              new RegExp(`^<134>1 \\S+ \\S+ flowd-go-${version.replaceAll(".", "\\.")} - firefly-json - \\{`),
            );
            const doc = JSON.parse(f.slice(f.indexOf("{")));
            assert.equal(doc["flow-lifecycle"].state, "start");
          }
          assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
          for (const gone of ["flowd-go.pid", "np"]) {
            await assert.rejects(Deno.stat(`${dir}/${gone}`), Deno.errors.NotFound, `${gone} left behind`);
          }
        },
      );

      await t.step("the end-to-end tests pass against the unpacked binary", async () => {
        // Every test file that drives the real daemon, except this one.
        const files: string[] = [];
        for (const sub of ["tests/e2e", "tests/privileged"]) {
          for await (const e of Deno.readDir(`${HERE}/${sub}`)) {
            if (!e.name.endsWith("_test.ts") || e.name === "package_test.ts") continue;
            const text = await Deno.readTextFile(`${HERE}/${sub}/${e.name}`);
            if (/from "\.\.\/helpers\/daemon\.ts"/.test(text)) files.push(`${sub}/${e.name}`);
          }
        }
        files.sort();
        // As root the binary runs in a mount namespace where the source tree and the toolchain are hidden.
        const wrapper = `${scratch}/flowd-go-hidden`;
        await Deno.writeTextFile(
          wrapper,
          // Only root with CAP_SYS_ADMIN may make a mount namespace; a test that drops to another user or sheds
          // its capabilities runs the binary directly.
          `#!/bin/sh\nunshare --mount true 2>/dev/null || exec ${shq(bin)} "$@"\n` +
            `exec ${hidingPrefix().map(shq).join(" ")} ${shq(bin)} "$@"\n`,
        );
        await Deno.chmod(wrapper, 0o755);
        const r = await run([Deno.execPath(), "test", "--allow-all", ...files], {
          cwd: HERE,
          env: { FLOWD_GO_BIN: wrapper, NO_COLOR: "1" },
        });
        const summary = r.stdout.split("\n").filter((l) => /^(ok|FAILED) \| /.test(l)).at(-1) ??
          "(no summary)";
        console.error(`package: e2e against the unpacked binary (${files.length} files): ${summary}`);
        assert.equal(r.code, 0, `${r.stdout.slice(-6000)}\n${r.stderr.slice(-3000)}`);
        assert.match(summary, /^ok \| [1-9]\d* passed (\(\d+ steps?\) )?\| 0 failed/);
      });

      const unitText = await Deno.readTextFile(`${root}/usr/lib/systemd/system/flowd-go.service`);
      const unit = parseUnit(unitText);

      await t.step(
        "systemd-analyze: the unit verifies clean; its exposure score is the README's",
        async () => {
          if (isRoot) {
            // The package laid over /usr and /etc, so that ExecStart and the man page exist as installed.
            const overlay = `mount -t overlay u -o "lowerdir=$0/usr:/usr" /usr && ` +
              `mount -t overlay e -o "lowerdir=$0/etc:/etc" /etc && exec systemd-analyze verify flowd-go.service`;
            const v = await run([
              "unshare",
              "--mount",
              "--propagation",
              "private",
              "sh",
              "-c",
              overlay,
              root,
            ]);
            assert.equal(v.code, 0, v.stderr + v.stdout);
            assert.equal(v.stderr.trim(), "", v.stderr);
          } else {
            console.error("SKIPPED (needs root): systemd-analyze verify with the package laid over /usr");
          }
          const s = await run([
            "systemd-analyze",
            "security",
            "--offline=yes",
            `${root}/usr/lib/systemd/system/flowd-go.service`,
          ]);
          const score = /Overall exposure level for flowd-go\.service: (\d+\.\d+)/.exec(s.stdout)?.[1];
          assert.ok(score, s.stdout + s.stderr);
          console.error(`package: systemd-analyze security exposure ${score}`);
          assert.ok(Number(score) <= 3, `exposure ${score} is above 3.0`);
          const readme = await Deno.readTextFile(`${HERE}/README.md`);
          const recorded = /`systemd-analyze security[^`]*`[^.]*?\b(\d+\.\d)\b/.exec(readme)?.[1];
          assert.equal(recorded, score, "README.md must record the current exposure score");
          // The hardening the unit promises.
          const want: Record<string, string> = {
            DynamicUser: "yes",
            NoNewPrivileges: "yes",
            ProtectSystem: "strict",
            ProtectHome: "yes",
            PrivateTmp: "yes",
            RestrictAddressFamilies: "AF_INET AF_INET6 AF_NETLINK AF_UNIX",
            Restart: "on-failure",
            RuntimeDirectory: "flowd-go",
            CacheDirectory: "flowd-go",
            ExecStopPost: "!/usr/bin/flowd-go marker clean",
          };
          for (const [k, v] of Object.entries(want)) assert.equal(serviceValue(unit, k), v, k);
          assert.equal(serviceValue(unit, "MemoryDenyWriteExecute"), undefined, "V8 needs W+X memory");
          assert.ok(Number.parseFloat(serviceValue(unit, "RestartSec") ?? "0") >= 1, "RestartSec");
          assert.doesNotMatch(serviceValue(unit, "AmbientCapabilities") ?? "", /SYS_ADMIN/);
        },
      );

      await t.step(
        "the man page renders with man -l, without warnings, and documents every command",
        async () => {
          const r = await run(["man", "--warnings", "-l", `${root}/usr/share/man/man1/flowd-go.1.gz`], {
            env: { MANWIDTH: "100", PAGER: "cat", MANPAGER: "cat" },
          });
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stderr.trim(), "", `warnings from groff:\n${r.stderr}`);
          const text = r.stdout; // not a terminal: man-db prints plain text
          for (const s of ["NAME", "SYNOPSIS", "OPTIONS", "COMMANDS", "CONFIGURATION", "FILES"]) {
            assert.match(text, new RegExp(`^${s}$`, "m"), `no ${s} section`);
          }
          for (const c of ["run", "conf", "marker clean", "stun sample", "version"]) {
            assert.match(text, new RegExp(`^\\s+${c}\\b`, "m"), `command ${c} is not documented`);
          }
        },
      );

      await t.step({
        name:
          `under the unit's sandbox the shipped configuration starts, as a transient user with the BPF capabilities only${
            isRoot ? "" : " [SKIPPED: needs root]"
          }`,
        ignore: !isRoot,
        fn: async () => {
          await using net = await createVethPair();
          await using box = await createUnitSandbox({
            unit,
            packageRoot: root,
            hide: [HERE],
            prefix: netOnly(net.nsA),
          });
          // The sandbox itself: the service user, writable only where the unit says, the source tree hidden.
          const probe = await run(box.exec(["sh", "-c", PROBE, HERE]));
          assert.equal(
            probe.stdout.trim(),
            `uid=${box.uid} etc=ro usr=ro cache=rw run=rw tmp=rw source=hidden`,
            probe.stderr,
          );
          const start = box.command(serviceValue(unit, "ExecStart")!);
          await using daemon = superviseProcess(start[0]!, start.slice(1));
          await daemon.waitForLine(/msg="let's go!"/);
          // Credentials: not root, exactly the ambient capabilities, no new privileges.
          const status = await Deno.readTextFile(`/proc/${daemon.process.pid}/status`);
          assert.match(status, new RegExp(`^Uid:\\s+${box.uid}\\s`, "m"), "not the service user");
          const capEff = BigInt("0x" + /^CapEff:\s+([0-9a-f]+)$/m.exec(status)![1]!);
          // CAP_NET_ADMIN 12, CAP_PERFMON 38, CAP_BPF 39.
          assert.equal(capEff, (1n << 12n) | (1n << 38n) | (1n << 39n), `CapEff ${capEff.toString(16)}`);
          assert.match(status, /^NoNewPrivs:\s+1$/m);
          // What it made in the RuntimeDirectory, as the service user.
          const pipe = await Deno.stat(`${box.runtimeDir}/np`);
          assert.ok(pipe.isFifo);
          assert.equal(pipe.uid, box.uid);
          assert.equal(pipe.mode! & 0o777, 0o660);
          assert.equal(
            (await Deno.readTextFile(`${box.runtimeDir}/flowd-go.pid`)).trim(),
            String(daemon.process.pid),
          );
          // A flow through the pipe reaches the flow's destination as a firefly, across the veth pair.
          const listen = `import dgram from "node:dgram"; const s = dgram.createSocket("udp6");
            s.on("message", (m) => { console.error(new TextDecoder().decode(m)); s.close(); });
            s.bind(10514, "::", () => console.error("ready"));`;
          const receiverArgv = [...net.prefix(net.nsB), Deno.execPath(), "eval", listen];
          await using receiver = superviseProcess(receiverArgv[0]!, receiverArgv.slice(1));
          await receiver.waitForLine(/^ready$/);
          const line = `start tcp ${net.ip6A} 40000 ${net.ip6B} 5201 2 9\n`;
          await ok(["sh", "-c", `printf '%s' "$1" > "$0"`, `${box.runtimeDir}/np`, line]);
          const firefly = await receiver.waitForLine(/firefly-json/);
          const doc = JSON.parse(firefly.slice(firefly.indexOf("{")));
          assert.equal(doc["flow-id"]["dst-ip"], net.ip6B);
          assert.deepEqual(doc.context, {
            "experiment-id": 2,
            "activity-id": 9,
            application: `flowd-go-${version}`,
          });
          // And the API on loopback, as a client on this host would call it.
          const api = await ok([
            ...net.prefix(net.nsA),
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
            "-d",
            JSON.stringify({
              State: "start",
              Protocol: "tcp",
              Src: `[${net.ip6A}]:40001`,
              Dst: `[${net.ip6B}]:5201`,
              Experiment: 2,
              Activity: 9,
            }),
            "http://127.0.0.1:7777/flow",
          ]);
          assert.equal(api, "200", "POST /flow on the shipped configuration");
          assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
          assert.doesNotMatch(daemon.lines.join("\n"), /level=(ERROR|WARN)/, daemon.lines.join("\n"));
          const post = box.command(serviceValue(unit, "ExecStopPost")!);
          const cleaned = await run(post);
          assert.equal(cleaned.code, 0, cleaned.stderr + cleaned.stdout);
          assert.match(cleaned.stdout, /nothing to clean/);
          // The runtime's code cache lives in the CacheDirectory and holds only the service's own files (the
          // root ExecStopPost must neither write there nor read code the service user could have written).
          const cached = (await ok(["find", box.cacheDir, "-mindepth", "1", "-printf", "%u %p\n"])).trim()
            .split("\n");
          if (form === "bundle") assert.ok(cached.some((l) => l.endsWith("/deno")), cached.join("\n"));
          for (const l of cached.filter(Boolean)) {
            assert.ok(l.startsWith(`${box.uid} `), `not the service's: ${l}`);
          }
        },
      });

      await t.step({
        name:
          `under the unit's sandbox the marker, sock_ops enricher, iperf3 watcher and netlink enricher run; ExecStopPost clears what a SIGKILL left${
            isRoot ? "" : " [SKIPPED: needs root]"
          }`,
        ignore: !isRoot,
        fn: async () => {
          await using net = await createVethPair();
          await using cg = await createTestCgroup();
          const etc = `${scratch}/etc-marker`;
          await Deno.mkdir(`${etc}/flowd-go`, { recursive: true });
          await Deno.writeTextFile(`${etc}/flowd-go/conf.yaml`, bpfConfig(net.ifA, cg.path));
          await chmodTree(etc);
          await using box = await createUnitSandbox({
            unit,
            packageRoot: root,
            extraEtc: etc,
            hide: [HERE],
            prefix: netOnly(net.nsA),
          });
          const start = box.command(serviceValue(unit, "ExecStart")!);
          const post = box.command(serviceValue(unit, "ExecStopPost")!);
          const tcFilters = async () =>
            (await ok([...net.prefix(net.nsA), "tc", "filter", "show", "dev", net.ifA, "egress"])).trim();

          {
            await using daemon = superviseProcess(start[0]!, start.slice(1));
            await daemon.waitForLine(/msg="let's go!"/, 15_000);
            const log = daemon.lines.join("\n");
            assert.match(log, /marker attached.*hook=tc/, log);
            assert.match(log, /logger=enrichers\.skops msg="sock_ops program attached"/, log);
            assert.match(log, /logger=plugins\.iperf3 msg="watching TCP connections"/, log);
            assert.match(log, /logger=enrichers\.netlink msg="polling flows"/, log);
            assert.doesNotMatch(log, /level=ERROR/, log);
            assert.match(await tcFilters(), /flowd_marker/);
            assert.equal(await daemon.stop("SIGKILL"), 137);
          }
          // A killed daemon leaves its tc filter; ExecStopPost removes it and the qdisc it made.
          assert.match(await tcFilters(), /flowd_marker/);
          // As the service itself the clean cannot tell whose filter it is: the kernel wants CAP_SYS_ADMIN
          // for BPF_PROG_GET_FD_BY_ID. Hence the "!" of ExecStopPost.
          const unprivileged = await run(box.exec(["/usr/bin/flowd-go", "marker", "clean"]));
          assert.equal(unprivileged.code, 1, unprivileged.stdout);
          assert.match(
            unprivileged.stdout + unprivileged.stderr,
            /bpf_prog_get_fd_by_id.*Operation not permitted/,
          );
          const cleaned = await run(post);
          assert.equal(cleaned.code, 0, cleaned.stderr + cleaned.stdout);
          assert.match(cleaned.stdout, /removed tcFilter from vethA/);
          assert.match(cleaned.stdout, /removed qdisc from vethA/);
          assert.equal(await tcFilters(), "");
          // The restart after it starts clean and stops clean.
          {
            await using daemon = superviseProcess(start[0]!, start.slice(1));
            await daemon.waitForLine(/msg="let's go!"/, 15_000);
            assert.equal(await daemon.stop("SIGTERM"), 0, daemon.lines.join("\n"));
            assert.doesNotMatch(daemon.lines.join("\n"), /level=ERROR/, daemon.lines.join("\n"));
          }
          assert.equal(await tcFilters(), "");
          assert.match((await run(post)).stdout, /nothing to clean/);
        },
      });

      await t.step({
        name: `the program's system calls and socket families stay within the unit's filters${
          isRoot && onPath("strace") ? "" : " [SKIPPED: needs root and strace]"
        }`,
        ignore: !isRoot || !onPath("strace"),
        fn: async () => {
          await using net = await createVethPair();
          await using cg = await createTestCgroup();
          const dir = `${scratch}/trace`;
          await Deno.mkdir(dir);
          await Deno.writeTextFile(`${dir}/conf.yaml`, bpfConfig(net.ifA, cg.path, dir));
          const traced = (name: string, argv: string[]) => [
            ...netOnly(net.nsA),
            "strace",
            "-f",
            "-qq",
            "-o",
            `${dir}/${name}.trace`,
            // No hiding here: the trace would show the mount calls of the wrapper, not of the program.
            "env",
            "-i",
            `PATH=${ENV_PATH}`,
            "HOME=/",
            ...argv,
          ];
          const argv = traced("run", [bin, "--conf", `${dir}/conf.yaml`, "run"]);
          {
            await using daemon = superviseProcess(argv[0]!, argv.slice(1));
            await daemon.waitForLine(/msg="let's go!"/, 30_000);
            const pid = Number((await Deno.readTextFile(`${dir}/flowd-go.pid`)).trim());
            await ok([
              ...net.prefix(net.nsA),
              "curl",
              "-s",
              "-o",
              "/dev/null",
              "http://127.0.0.1:7777/dummy/start",
            ]);
            await ok([...net.prefix(net.nsA), "kill", "-HUP", String(pid)]);
            await daemon.waitForLine(/SIGHUP/, 10_000);
            await new Promise((r) => setTimeout(r, 1000));
            await ok([...net.prefix(net.nsA), "kill", "-TERM", String(pid)]);
            await waitFor(async () => !(await exists(`${dir}/flowd-go.pid`)), "the daemon to stop", 20_000);
            await daemon.stop("SIGTERM");
          }
          await ok(traced("clean", [bin, "marker", "clean"]));
          const allowed = await allowedSyscalls(serviceValue(unit, "SystemCallFilter")!);
          const families = new Set(serviceValue(unit, "RestrictAddressFamilies")!.split(/\s+/));
          for (const name of ["run", "clean"]) {
            const summary = traceSummary(await Deno.readTextFile(`${dir}/${name}.trace`));
            assert.ok(summary.syscalls.size > 30, `${name}: the trace is too short to mean anything`);
            assert.deepEqual(
              [...summary.syscalls].filter((s) => !allowed.has(s)).sort(),
              [],
              `${name}: calls outside SystemCallFilter`,
            );
            assert.deepEqual(
              [...summary.families].filter((f) => !families.has(f)).sort(),
              [],
              `${name}: families outside RestrictAddressFamilies`,
            );
            assert.ok(summary.syscalls.has("bpf"), `${name}: no bpf() in the trace`);
          }
        },
      });

      await t.step(
        "a denort runtime makes the build compile: the cached archive is found and used offline",
        async () => {
          // This machine has no denort, so a stand-in proves the plumbing: the deno CLI in a denort archive in a
          // Deno cache. deno compile takes it, without any network; the result is no flowd-go (the CLI ignores
          // the embedded program), and the build's own check refuses it. A real denort archive passes that check.
          const denoZip = [...Deno.readDirSync(`${scratch}/rpmbuild/SOURCES`)].find((e) =>
            e.name.startsWith("deno-")
          )!;
          const denoDir = `${scratch}/deno-dir`;
          const dl = `${denoDir}/dl/release/v${denoZip.name.split("-")[1]}`;
          await Deno.mkdir(dl, { recursive: true });
          // The npm packages come from the vendored cache of the source tarball, as in the RPM build.
          const tarball = `${scratch}/rpmbuild/SOURCES/flowd-go-${rpmVersion}.tar.gz`;
          await ok([
            "tar",
            "-xzf",
            tarball,
            "-C",
            denoDir,
            "--strip-components=3",
            `flowd-go-${rpmVersion}/vendor/deno`,
          ]);
          await ok([
            "sh",
            "-c",
            `unzip -q -p "$0" deno > "$1/denort" && chmod 755 "$1/denort" && cd "$1" && zip -q denort-x86_64-unknown-linux-gnu.zip denort && rm denort`,
            `${scratch}/rpmbuild/SOURCES/${denoZip.name}`,
            dl,
          ]);
          const stub = await run(
            [
              ...(isRoot ? ["unshare", "--net"] : []),
              "bash",
              `${HERE}/scripts/build.sh`,
              "--out",
              `${scratch}/dist-compile`,
            ],
            { env: { DENO_DIR: denoDir, FLOWD_GO_DENO: Deno.execPath(), NO_COLOR: "1" } },
          );
          assert.equal(stub.code, 1, stub.stderr);
          assert.match(
            stub.stderr,
            /compiling the single executable \(denort from .*denort-x86_64-unknown-linux-gnu\.zip\)/,
          );
          assert.match(stub.stderr, /the built flowd-go does not run/);
          assert.ok(
            (await Deno.stat(`${scratch}/dist-compile/bin/flowd-go`)).size > 50e6,
            "no executable was compiled",
          );
          // Given directly, the CLI is recognised as no denort before anything is compiled.
          const direct = await run(["bash", `${HERE}/scripts/build.sh`, "--out", `${scratch}/dist-compile`], {
            env: { DENORT_BIN: Deno.execPath(), FLOWD_GO_DENO: Deno.execPath(), NO_COLOR: "1" },
          });
          assert.equal(direct.code, 1);
          assert.match(direct.stderr, /DENORT_BIN points at the deno CLI, not at the denort runtime/);
        },
      );

      // The same RPM under a real systemd: a booted Debian 12 machine (tests/e2e/booted_unit_checks.ts).
      const bootTools = ["debootstrap", "systemd-nspawn", "nsenter", "tcpdump", "tshark"].filter((c) =>
        !onPath(c)
      );
      if (!isRoot || bootTools.length) {
        console.error(
          `SKIPPED (${
            isRoot ? `needs ${bootTools.join(", ")}` : "needs root"
          }): the RPM in a booted Debian 12`,
        );
      } else {
        await checkInBootedDebian(t, rpmFile, `${scratch}/booted`);
      }
    } finally {
      await Deno.remove(scratch, { recursive: true });
    }
  },
});

/** Reports, from inside the sandbox, who runs and where it may write; $0 is the source tree. */
const PROBE = String
  .raw`w() { if touch "$1/.probe" 2>/dev/null; then rm -f "$1/.probe"; echo rw; else echo ro; fi; }
[ -z "$(ls -A "$0")" ] && src=hidden || src=visible
echo "uid=$(id -u) etc=$(w /etc) usr=$(w /usr/bin) cache=$(w /var/cache/flowd-go) run=$(w /run/flowd-go) tmp=$(w /tmp) source=$src"`;

/** A configuration with every BPF part: marker (tc, to leave something behind on SIGKILL), sock_ops, watcher. */
function bpfConfig(ifname: string, cgroup: string, dir = "/run/flowd-go"): string {
  const work = dir === "/run/flowd-go" ? "/var/cache/flowd-go" : dir;
  return `pidPath: ${dir}/flowd-go.pid
workDir: ${work}
plugins:
  namedPipe: {pipePath: ${dir}/np}
  api: {bindAddress: 127.0.0.1, bindPort: 7777, enableDummyEndpoints: true}
  iperf3: {cgroupPath: ${cgroup}, minDestinationPort: 5201, maxDestinationPort: 5201}
backends:
  marker: {targetInterfaces: [${ifname}], attachMode: tc}
  firefly: {sendToDestination: true, enrich: true}
enrichers:
  period: 1000
  netlink: {}
  skops: {cgroupPath: ${cgroup}}
`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Lets the service user traverse a scratch tree made by root (mkdtemp makes 0700 directories). */
async function chmodTree(path: string): Promise<void> {
  await Deno.chmod(path, 0o755);
  for await (const e of Deno.readDir(path)) {
    if (e.isDirectory) await chmodTree(`${path}/${e.name}`);
    else if (e.isFile) await Deno.chmod(`${path}/${e.name}`, 0o644);
  }
}

function shq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}
