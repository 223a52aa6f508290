import assert from "node:assert/strict";
import { loadBuiltinConfig, loadConfigFile, parseConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/core/errors.ts";

function load(text: string) {
  return parseConfig(text, "conf.yaml");
}

function fails(text: string, re: RegExp): void {
  assert.throws(() => load(text), (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e}`);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("config: an empty or comment-only file applies every top-level default", () => {
  for (const text of ["", "# only a comment\n", "---\n# comment\n", "---\n"]) {
    const { config } = load(text);
    assert.equal(config.pidPath, "/var/run/flowd-go.pid");
    assert.equal(config.workDir, "/var/cache/flowd-go");
    assert.deepEqual(config.plugins, {});
    assert.deepEqual(config.backends, {});
    assert.equal(config.enrichers, undefined);
  }
});

Deno.test("config: every section enabled with {} gets the original's defaults", () => {
  const { config } = load(`
plugins: {namedPipe: {}, api: {}, firefly: {}, perfsonar: {}, iperf3: {}}
backends: {marker: {}, firefly: {stun: {}}, prometheus: {}}
enrichers: {netlink: {}, skops: {}}
`);
  assert.deepEqual(config.plugins.namedPipe, {
    maxReaders: 5,
    buffSize: 1000,
    pipePath: "/var/run/flowd-go/np",
    pipeMode: "0660",
  });
  assert.deepEqual(config.plugins.api, {
    bindAddress: "127.0.0.1",
    bindPort: 7777,
    maxConnections: 256,
    headerTimeout: 10,
    idleTimeout: 60,
    bodyTimeout: 30,
    enableDummyEndpoints: false,
  });
  assert.deepEqual(config.plugins.firefly, {
    bindAddress: "127.0.0.1",
    bindPort: 10514,
    bufferSize: 4096,
    deadline: 0,
    hasSyslogHeader: false,
    allowedSources: ["127.0.0.0/8", "::1/128"],
    rateLimit: 1000,
    rateBurst: 2000,
  });
  assert.deepEqual(config.plugins.perfsonar, { experimentId: 0, activityId: 0 });
  assert.deepEqual(config.plugins.iperf3, {
    minSourcePort: 0,
    maxSourcePort: 0,
    minDestinationPort: 0,
    maxDestinationPort: 0,
    cgroupPath: "/sys/fs/cgroup",
    programPath: "",
    debugMode: false,
    randomIDs: false,
    activityIDs: [0, 1, 2],
    experimentIDs: [0, 1, 2],
  });
  // matchAll is forced on because perfsonar is enabled (checked separately below).
  assert.deepEqual(config.backends.marker, {
    targetInterfaces: ["lo"],
    discoverInterfaces: false,
    removeQdisc: true,
    programPath: "",
    markingStrategy: "label",
    debugMode: false,
    matchAll: true,
    attachMode: "auto",
    maxFlows: 100_000,
    whenFull: "evictOldest",
  });
  assert.deepEqual(config.backends.firefly, {
    destinationPort: 10514,
    prependSyslog: true,
    sendToDestination: true,
    sendToCollector: false,
    collectorAddress: "127.0.0.1",
    collectorPort: 10514,
    enrich: false,
    enrichmentMode: "lean",
    stun: {
      manualMapping: {},
      stunServers: [
        "stun.l.google.com:3478",
        "stun1.l.google.com:3478",
        "stun2.l.google.com:3478",
        "stun3.l.google.com:3478",
        "stun4.l.google.com:3478",
      ],
      httpServers: ["https://api64.ipify.org?format=json", "https://ipconfig.io/json"],
      httpTimeout: 3,
      stunTimeout: 3,
    },
  });
  assert.deepEqual(config.backends.prometheus, {
    log: true,
    bindAddress: "127.0.0.1",
    netlinkPort: 8080,
    skopsPort: 8081,
    maxConnections: 32,
    headerTimeout: 10,
    idleTimeout: 60,
  });
  assert.deepEqual(config.enrichers, {
    period: 1000,
    netlink: { protocol: 6, ext: 255, state: 3071 },
    skops: { cgroupPath: "/sys/fs/cgroup", programPath: "", debugMode: false, strategy: "poll" },
  });
});

Deno.test("config: present keys override defaults, also with zero values", () => {
  const { config } = load(`
pidPath: ""
plugins:
  api: {bindAddress: "::1", bindPort: 0}
backends:
  marker: {removeQdisc: false, targetInterfaces: [eth0, eth1]}
`);
  assert.equal(config.pidPath, "");
  assert.deepEqual([config.plugins.api!.bindAddress, config.plugins.api!.bindPort], ["::1", 0]);
  assert.equal(config.backends.marker!.removeQdisc, false);
  assert.deepEqual(config.backends.marker!.targetInterfaces, ["eth0", "eth1"]);
});

Deno.test("config: a scalar with an explicit null keeps its default; a null group is empty", () => {
  const { config } = load("pidPath:\nplugins:\nbackends:\n  firefly:\n    collectorPort:\n");
  assert.equal(config.pidPath, "/var/run/flowd-go.pid");
  assert.deepEqual(config.plugins, {});
  assert.equal(config.backends.firefly!.collectorPort, 10514);
});

Deno.test("config: strategy names are case-insensitive and normalised", () => {
  assert.equal(
    load("backends: {marker: {markingStrategy: HOPBYHOPDESTINATION}}").config.backends.marker!
      .markingStrategy,
    "hopByHopDestination",
  );
  assert.equal(
    load("enrichers: {skops: {strategy: Transition}}").config.enrichers!.skops!.strategy,
    "transition",
  );
  assert.equal(
    load("backends: {firefly: {enrichmentMode: ''}}").config.backends.firefly!.enrichmentMode,
    "full",
  );
  assert.equal(load("backends: {marker: {attachMode: TC}}").config.backends.marker!.attachMode, "tc");
});

Deno.test("config: the HTTP listeners' limits, the dummy routes and the token file are checked", () => {
  const { config } = load(`
plugins:
  api: {maxConnections: 10, headerTimeout: 0.5, bodyTimeout: 2, idleTimeout: 5, enableDummyEndpoints: true,
        tokenFile: /etc/flowd-go/token}
backends:
  prometheus: {maxConnections: 4, headerTimeout: 1, idleTimeout: 120}
`);
  const api = config.plugins.api!;
  assert.deepEqual(
    [api.maxConnections, api.headerTimeout, api.bodyTimeout, api.idleTimeout, api.enableDummyEndpoints],
    [10, 0.5, 2, 5, true],
  );
  assert.equal(api.tokenFile, "/etc/flowd-go/token");
  const p = config.backends.prometheus!;
  assert.deepEqual([p.maxConnections, p.headerTimeout, p.idleTimeout], [4, 1, 120]);
  for (
    const [text, message] of [
      [
        "plugins: {api: {maxConnections: 0}}",
        /plugins\.api\.maxConnections: expected a number of connections in 1\.\.65535, got 0/,
      ],
      [
        "plugins: {api: {headerTimeout: 0}}",
        /plugins\.api\.headerTimeout: expected a number of seconds in 0\.01\.\.3600, got 0/,
      ],
      ["plugins: {api: {bodyTimeout: forever}}", /plugins\.api\.bodyTimeout: expected a number of seconds/],
      ["plugins: {api: {enableDummyEndpoints: yes please}}", /enableDummyEndpoints: expected true or false/],
      ["plugins: {api: {tokenFile: ''}}", /plugins\.api\.tokenFile: expected a non-empty path/],
      [
        "backends: {prometheus: {idleTimeout: 7200}}",
        /backends\.prometheus\.idleTimeout: expected a number of seconds/,
      ],
      ["backends: {prometheus: {bodyTimeout: 3}}", /unknown key backends\.prometheus\.bodyTimeout/],
    ] as const
  ) {
    assert.throws(() => load(text), message, text);
  }
});

Deno.test("config: the quick-start configuration turns the dummy routes on, on loopback", () => {
  const { config } = loadBuiltinConfig("builtin:quickstart");
  assert.equal(config.plugins.api!.enableDummyEndpoints, true);
  assert.equal(config.plugins.api!.bindAddress, "127.0.0.1");
  assert.equal(load("plugins: {api: {}}").config.plugins.api!.enableDummyEndpoints, false);
});

Deno.test("config: JSON documents parse too (YAML flow style)", () => {
  const { config } = load('{"plugins": {"api": {"bindPort": 8000}}}');
  assert.equal(config.plugins.api!.bindPort, 8000);
});

Deno.test("config: unknown keys are refused with path, line and a suggestion", () => {
  fails(
    "plugins:\n  namedPipe:\n    pipPath: /x\n",
    /^conf\.yaml:3: unknown key plugins\.namedPipe\.pipPath \(did you mean pipePath\?\)/,
  );
  fails("plugins:\n  np: {}\n", /conf\.yaml:2: unknown key plugins\.np \(did you mean namedPipe\?\)/);
  fails(
    "plugins:\n  perfsonar:\n    activityID: 3\n",
    /unknown key plugins\.perfsonar\.activityID \(did you mean activityId\?\)/,
  );
  fails("backends:\n  marker:\n    forceHookRemoval: true\n", /forceHookRemoval .*removeQdisc/);
  fails(
    "zzz: 1\n",
    /conf\.yaml:1: unknown key zzz \(known keys here: pidPath, workDir, controlSocket, plugins, backends, enrichers, registry\)/,
  );
});

Deno.test("config: each validation error names the key, the line and what is expected", () => {
  const cases: [string, RegExp][] = [
    [
      "plugins:\n  api:\n    bindPort: 70000\n",
      /conf\.yaml:3: plugins\.api\.bindPort: expected a port number in 0\.\.65535, got 70000/,
    ],
    [
      "plugins:\n  api:\n    bindPort: seven\n",
      /plugins\.api\.bindPort: expected a port number .* got "seven"/,
    ],
    ["plugins:\n  api:\n    bindPort: 1.5\n", /plugins\.api\.bindPort: expected a port number/],
    [
      "plugins:\n  firefly:\n    bufferSize: 1024\n",
      /plugins\.firefly\.bufferSize: expected a buffer size in 2048\.\./,
    ],
    [
      "plugins:\n  firefly:\n    bindAddress: localhost\n",
      /plugins\.firefly\.bindAddress: expected an IPv4 or IPv6 address, got "localhost"/,
    ],
    [
      "plugins:\n  firefly:\n    hasSyslogHeader: yes\n",
      /hasSyslogHeader: expected true or false, got "yes"/,
    ],
    [
      "plugins:\n  namedPipe:\n    buffSize: 0\n",
      /plugins\.namedPipe\.buffSize: expected an integer in 1\.\./,
    ],
    [
      "plugins:\n  namedPipe:\n    pipeMode: 0660\n",
      /pipeMode: expected an octal mode as a quoted string such as "0660", got 660/,
    ],
    ['plugins:\n  namedPipe:\n    pipeMode: "0999"\n', /pipeMode: expected an octal mode/],
    [
      "plugins:\n  perfsonar:\n    experimentId: -1\n",
      /plugins\.perfsonar\.experimentId: expected an experiment id in 0\.\.4294967295 or an experiment name from the SciTags registry, got -1/,
    ],
    [
      "plugins:\n  iperf3:\n    experimentIDs: [1, 2]\n    activityIDs: [1]\n",
      /plugins\.iperf3\.activityIDs: experimentIDs has 2 entries but activityIDs has 1/,
    ],
    [
      "plugins:\n  iperf3:\n    experimentIDs: []\n    activityIDs: []\n",
      /experimentIDs and activityIDs must not be empty/,
    ],
    [
      "plugins:\n  iperf3:\n    minSourcePort: 6000\n    maxSourcePort: 5000\n",
      /minSourcePort \(6000\) is above maxSourcePort \(5000\)/,
    ],
    [
      "backends:\n  marker:\n    markingStrategy: flowLabelMatchAll\n",
      /conf\.yaml:3: backends\.marker\.markingStrategy: expected one of "label", "hopByHop", "destination", "hopByHopDestination", got "flowLabelMatchAll"/,
    ],
    ["backends:\n  marker:\n    attachMode: xdp\n", /attachMode: expected one of "auto", "tcx", "tc"/],
    ["backends:\n  marker:\n    targetInterfaces: eth0\n", /targetInterfaces: /],
    ["backends:\n  firefly:\n    enrichmentMode: verbose\n", /enrichmentMode/],
    [
      "backends:\n  firefly:\n    collectorPort: 0\n",
      /collectorPort: expected a port number in 1\.\.65535, got 0/,
    ],
    [
      "backends:\n  firefly:\n    stun:\n      manualMapping:\n        10.0.0.1: public\n",
      /conf\.yaml:5: backends\.firefly\.stun\.manualMapping\.10\.0\.0\.1: expected an IPv4 or IPv6 address, got "public"/,
    ],
    [
      "backends:\n  firefly:\n    stun:\n      stunServers: [stun.example.org]\n",
      /stunServers\.0: expected host:port/,
    ],
    ["enrichers:\n  period: 0\n", /enrichers\.period: expected a period in milliseconds in 10\.\./],
    [
      "enrichers:\n  skops:\n    strategy: sometimes\n",
      /enrichers\.skops\.strategy: expected one of "poll", "transition"/,
    ],
    [
      "enrichers:\n  netlink:\n    protocol: 256\n",
      /enrichers\.netlink\.protocol: expected an IP protocol number in 0\.\.255/,
    ],
    ["plugins:\n  api:\n", /conf\.yaml:2: plugins\.api: has no value: write "api: \{\}" to enable it/],
    ['workDir: ""\n', /workDir: expected a non-empty path/],
    ["pidPath: a\npidPath: b\n", /conf\.yaml:2: invalid YAML: Map keys must be unique/],
    ["plugins:\n  api: {\n", /conf\.yaml:\d+: invalid YAML/],
    ["- a\n- b\n", /conf\.yaml:1: the configuration must be a mapping/],
  ];
  for (const [text, re] of cases) fails(text, re);
});

Deno.test("config: perfSONAR forces matchAll on the marker, with a warning", () => {
  const { config, warnings } = load(
    "plugins: {perfsonar: {experimentId: 2, activityId: 2}}\nbackends: {marker: {}}",
  );
  assert.equal(config.backends.marker!.matchAll, true);
  assert.ok(warnings.some((w) => /overriding backends\.marker\.matchAll/.test(w)));
});

Deno.test("config: dependency warnings (enrich without enricher, nothing enabled)", () => {
  assert.ok(
    load("backends: {firefly: {enrich: true}}\nplugins: {api: {}}").warnings.some((w) =>
      /no enricher/.test(w)
    ),
  );
  assert.ok(
    load("enrichers: {netlink: {}}\nbackends: {firefly: {}}").warnings.some((w) =>
      /nothing uses their samples/.test(w)
    ),
  );
  assert.deepEqual(
    load("enrichers: {skops: {}}\nbackends: {prometheus: {skopsPort: 0}}").warnings.filter((w) =>
      /prometheus/.test(w)
    ),
    ["backends.prometheus.skopsPort is 0: the samples of enrichers.skops are not exported"],
  );
  assert.ok(
    !load("enrichers: {netlink: {}}\nbackends: {prometheus: {}}\nplugins: {api: {}}").warnings.some((w) =>
      /enrichers/.test(w)
    ),
  );
  const empty = load("").warnings;
  assert.ok(empty.some((w) => /no plugin is enabled/.test(w)));
  assert.ok(empty.some((w) => /no backend is enabled/.test(w)));
});

Deno.test("config: a missing file is a clear error", async () => {
  const { loadConfigFile } = await import("../../src/config/load.ts");
  await assert.rejects(
    () => loadConfigFile("/nonexistent/flowd-go.yaml"),
    /cannot read the configuration file \/nonexistent\/flowd-go\.yaml: no such file/,
  );
});

Deno.test("config: stun additions (HTTP services, timeouts) and manualMapping families are validated", () => {
  const { config } = load(`
backends:
  firefly:
    stun:
      manualMapping: {10.0.0.1: 203.0.113.1, "fd00::1": "2001:db8::1"}
      httpServers: ["http://127.0.0.1:8080/ip"]
      stunServers: ["[::1]:3478", "127.0.0.1:3478"]
      httpTimeout: 0.5
      stunTimeout: 10
`);
  assert.deepEqual(config.backends.firefly!.stun, {
    manualMapping: { "10.0.0.1": "203.0.113.1", "fd00::1": "2001:db8::1" },
    httpServers: ["http://127.0.0.1:8080/ip"],
    stunServers: ["[::1]:3478", "127.0.0.1:3478"],
    httpTimeout: 0.5,
    stunTimeout: 10,
  });
  assert.deepEqual(
    load("backends: {firefly: {stun: {httpServers: [], stunServers: []}}}").config.backends.firefly!
      .stun!.httpServers,
    [],
  );
  const cases: [string, RegExp][] = [
    [
      "backends:\n  firefly:\n    stun:\n      httpServers: [ftp://x/]\n",
      /conf\.yaml:4: backends\.firefly\.stun\.httpServers\.0: expected an http:\/\/ or https:\/\/ URL, got "ftp:\/\/x\/"/,
    ],
    [
      "backends:\n  firefly:\n    stun:\n      httpTimeout: 0\n",
      /backends\.firefly\.stun\.httpTimeout: expected a number of seconds in 0\.05\.\.60, got 0/,
    ],
    [
      "backends:\n  firefly:\n    stun:\n      stunTimeout: soon\n",
      /backends\.firefly\.stun\.stunTimeout: expected a number of seconds in 0\.05\.\.60, got "soon"/,
    ],
    [
      "backends:\n  firefly:\n    stun:\n      manualMapping:\n        10.0.0.1: 2001:db8::1\n",
      /conf\.yaml:5: backends\.firefly\.stun\.manualMapping\.10\.0\.0\.1: maps ipv4 address 10\.0\.0\.1 to ipv6 address 2001:db8::1/,
    ],
    [
      "backends:\n  firefly:\n    stun:\n      stunServers: [stun.example.org]\n",
      /stunServers\.0: expected host:port/,
    ],
  ];
  for (const [text, re] of cases) fails(text, re);
});

Deno.test("config: experiments and activities by registry name in perfsonar and iperf3, resolved at load", () => {
  const { config } = load(`
plugins:
  perfsonar: {experimentId: ATLAS, activityId: data-challenge}
  iperf3:
    experimentIDs: [atlas, 3, "cms", 7]
    activityIDs: [Staging, staging, "Data Challenge", 1]
`);
  assert.deepEqual(config.plugins.perfsonar, { experimentId: 2, activityId: 26 });
  assert.deepEqual(config.plugins.iperf3!.experimentIDs, [2, 3, 3, 7]);
  // Activity ids are per experiment: ATLAS Staging is 19, CMS Staging 16.
  assert.deepEqual(config.plugins.iperf3!.activityIDs, [19, 16, 4, 1]);
  const cases: [string, RegExp][] = [
    [
      "plugins:\n  perfsonar:\n    experimentId: atlass\n",
      /^conf\.yaml:3: plugins\.perfsonar\.experimentId: unknown experiment "atlass"; did you mean "atlas" \(2\)\?/,
    ],
    [
      "plugins:\n  perfsonar:\n    experimentId: cms\n    activityId: stagin\n",
      /^conf\.yaml:4: plugins\.perfsonar\.activityId: unknown activity "stagin" of experiment cms \(3\); did you mean "Staging" \(16\)\?/,
    ],
    [
      "plugins:\n  perfsonar:\n    experimentId: 99\n    activityId: Staging\n",
      /conf\.yaml:4: plugins\.perfsonar\.activityId: experiment 99 is not in the registry, so activity "Staging" cannot be resolved by name/,
    ],
    [
      "plugins:\n  iperf3:\n    experimentIDs: [1, lhcb]\n    activityIDs: [1, nope]\n",
      /conf\.yaml:4: plugins\.iperf3\.activityIDs\.1: unknown activity "nope" of experiment lhcb \(4\)/,
    ],
    [
      "plugins:\n  perfsonar:\n    experimentId: ''\n",
      /experimentId: expected an experiment id .* or an experiment name/,
    ],
  ];
  for (const [text, re] of cases) fails(text, re);
});

Deno.test("config: the registry section (off by default) with its defaults and checks", () => {
  assert.equal(load("").config.registry, undefined);
  assert.deepEqual(load("registry: {}").config.registry, {
    url: "https://scitags.org/api.json",
    refreshInterval: 86400,
    timeout: 5,
  });
  assert.deepEqual(
    load("registry: {url: 'http://[::1]:8000/api.json', refreshInterval: 0, timeout: 0.5}").config
      .registry,
    { url: "http://[::1]:8000/api.json", refreshInterval: 0, timeout: 0.5 },
  );
  fails("registry:\n", /conf\.yaml:1: registry: has no value: write "registry: \{\}"/);
  fails(
    "registry:\n  refreshInterval: 10\n",
    /conf\.yaml:2: registry\.refreshInterval: expected 0 or a number of seconds in 60\.\.31536000, got 10/,
  );
  fails("registry:\n  url: scitags.org\n", /registry\.url: expected an http:\/\/ or https:\/\/ URL/);
  fails(
    "registry:\n  timeout: 120\n",
    /registry\.timeout: expected a number of seconds in 0\.05\.\.60, got 120/,
  );
});

Deno.test("config: names resolve with the registry cached in workDir when the registry section is on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flowd-config-registry-" });
  try {
    const cached = {
      version: 1,
      modified: "2030-01-01T00:00:00+00:00",
      experiments: [{
        expName: "newexp",
        expId: 42,
        activities: [{ activityName: "Fresh Start", activityId: 7 }],
      }],
    };
    await Deno.writeTextFile(`${dir}/scitags-registry.json`, JSON.stringify(cached));
    const text = (registry: string) =>
      `workDir: ${dir}\n${registry}plugins:\n  perfsonar: {experimentId: newexp, activityId: freshstart}\n`;
    await Deno.writeTextFile(`${dir}/on.yaml`, text("registry: {}\n"));
    const on = await loadConfigFile(`${dir}/on.yaml`);
    assert.deepEqual(on.config.plugins.perfsonar, { experimentId: 42, activityId: 7 });
    // Without the registry section the cache is not consulted: only the embedded names exist.
    await Deno.writeTextFile(`${dir}/off.yaml`, text(""));
    await assert.rejects(() => loadConfigFile(`${dir}/off.yaml`), /unknown experiment "newexp"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
