import assert from "node:assert/strict";
import {
  chooseCgroup,
  mountOf,
  parseMountInfo,
  parseUnifiedCgroup,
  resolveCgroupPath,
} from "../../src/bpf/cgroup.ts";
import { ConfigError } from "../../src/core/errors.ts";
import { parseConfigHz } from "../../src/bpf/kernel_hz.ts";
import { parseCpuList } from "../../src/bpf/sock_ops_program.ts";

// A hybrid host: /sys/fs/cgroup is a tmpfs of v1 controllers, cgroup2 sits at /sys/fs/cgroup/unified.
const HYBRID = `22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
40 1 0:40 / /mnt/with\\040space rw - ext4 /dev/sda1 rw`;

// A unified host: cgroup2 at /sys/fs/cgroup.
const UNIFIED = `22 1 0:21 / /sys rw - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate`;

// A v1-only host.
const LEGACY = `25 22 0:23 / /sys/fs/cgroup ro - tmpfs tmpfs ro
30 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu`;

Deno.test("cgroup: mountinfo parsing, octal escapes, the mount that holds a path", () => {
  const mounts = parseMountInfo(HYBRID);
  assert.equal(mounts.length, 6);
  assert.deepEqual(mounts[2], { mountPoint: "/sys/fs/cgroup/unified", fsType: "cgroup2" });
  assert.equal(mounts[5]!.mountPoint, "/mnt/with space");
  assert.equal(mountOf("/sys/fs/cgroup/unified/a/b", mounts)?.fsType, "cgroup2");
  assert.equal(
    mountOf("/sys/fs/cgroup/unifiedX", mounts)?.fsType,
    "tmpfs",
    "a prefix of a name is not a parent",
  );
  assert.equal(mountOf("/sys/fs/cgroup", mounts)?.fsType, "tmpfs");
  assert.equal(
    parseUnifiedCgroup("12:pids:/x\n0::/system.slice/flowd-go.service\n"),
    "/system.slice/flowd-go.service",
  );
  assert.equal(parseUnifiedCgroup("0::/\n"), "/");
  assert.equal(parseUnifiedCgroup("4:memory:/x\n"), undefined);
});

Deno.test("cgroup: the default /sys/fs/cgroup maps to the v2 mount on a hybrid host, and is taken as is on a unified one", () => {
  const hybrid = { mounts: parseMountInfo(HYBRID), ownCgroup: "/" };
  assert.equal(chooseCgroup("/sys/fs/cgroup", hybrid).path, "/sys/fs/cgroup/unified");
  assert.equal(chooseCgroup("/sys/fs/cgroup/", hybrid).path, "/sys/fs/cgroup/unified");
  assert.equal(chooseCgroup("/sys/fs/cgroup/unified/x.slice", hybrid).path, "/sys/fs/cgroup/unified/x.slice");
  const unified = { mounts: parseMountInfo(UNIFIED), ownCgroup: "/" };
  assert.deepEqual(chooseCgroup("/sys/fs/cgroup", unified), { path: "/sys/fs/cgroup", how: "as configured" });
});

Deno.test('cgroup: "" picks the parent of the daemon\'s own cgroup, or the root', () => {
  const service = { mounts: parseMountInfo(HYBRID), ownCgroup: "/system.slice/flowd-go.service" };
  assert.equal(chooseCgroup("", service).path, "/sys/fs/cgroup/unified/system.slice");
  const top = { mounts: parseMountInfo(UNIFIED), ownCgroup: "/user.slice" };
  assert.equal(chooseCgroup("", top).path, "/sys/fs/cgroup");
  const root = { mounts: parseMountInfo(UNIFIED), ownCgroup: "/" };
  assert.equal(chooseCgroup("", root).path, "/sys/fs/cgroup");
});

Deno.test("cgroup: a path outside cgroup v2 is refused with the place v2 is mounted", () => {
  const hybrid = { mounts: parseMountInfo(HYBRID), ownCgroup: "/" };
  assert.throws(
    () => chooseCgroup("/sys/fs/cgroup/cpu,cpuacct", hybrid),
    (err) =>
      err instanceof ConfigError &&
      err.message ===
        "cgroupPath /sys/fs/cgroup/cpu,cpuacct is not in a cgroup v2 hierarchy (it is on cgroup); " +
          "cgroup v2 is mounted at /sys/fs/cgroup/unified",
  );
  assert.throws(() => chooseCgroup("/tmp", hybrid), /not in a cgroup v2 hierarchy/);
  const legacy = { mounts: parseMountInfo(LEGACY), ownCgroup: undefined };
  assert.throws(() => chooseCgroup("/sys/fs/cgroup", legacy), /need cgroup v2, which is mounted nowhere/);
  assert.throws(() => chooseCgroup("", legacy), ConfigError);
});

Deno.test("cgroup: on this host the default resolves to an existing cgroup2 directory; a missing one is refused", async () => {
  const choice = await resolveCgroupPath("/sys/fs/cgroup");
  assert.ok((await Deno.stat(`${choice.path}/cgroup.procs`)).isFile, choice.path);
  const mounts = parseMountInfo(await Deno.readTextFile("/proc/self/mountinfo"));
  assert.equal(mountOf(choice.path, mounts)?.fsType, "cgroup2");
  await assert.rejects(() => resolveCgroupPath(`${choice.path}/no-such-cgroup-here`), /cannot be used/);
});

Deno.test("kernel HZ: CONFIG_HZ from a kernel configuration", () => {
  assert.equal(parseConfigHz("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"), 250);
  assert.equal(parseConfigHz("CONFIG_HZ=300"), 300);
  assert.equal(parseConfigHz("CONFIG_HZ_1000=y\n"), undefined);
  assert.equal(parseConfigHz("CONFIG_HZ=0\n"), undefined);
});

Deno.test("possible CPUs: sysfs lists and ranges", () => {
  assert.equal(parseCpuList("0\n"), 1);
  assert.equal(parseCpuList("0-3\n"), 4);
  assert.equal(parseCpuList("0-3,6"), 7);
  assert.equal(parseCpuList("0,2-5,8-9"), 10);
});
