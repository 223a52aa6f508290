import assert from "node:assert/strict";
import { ConnectionsSchema, DEFAULT_INTERNAL_NETWORKS } from "../../src/config/schema.ts";
import { type Connection, ConnectionRules } from "../../src/plugins/connection_rules.ts";
import { parseEndpoint } from "../../src/net/ip.ts";
import { parseConfig } from "../../src/config/load.ts";

const loadConfigText = (text: string, source: string) => parseConfig(text, source).config;

const conn = (local: string, remote: string, direction: Connection["direction"] = "inbound"): Connection => ({
  local: parseEndpoint(local),
  remote: parseEndpoint(remote),
  direction,
});

Deno.test("connections rules: first match wins, by port, range, prefix and direction", () => {
  const rules = new ConnectionRules(ConnectionsSchema.parse({
    rules: [
      { localPorts: [1094], direction: "inbound", experiment: 2, activity: 1 },
      { localPorts: ["2880-2890"], remotePrefixes: ["2001:db8:1::/48"], experiment: 3, activity: 4 },
      { remotePorts: [443], direction: "outbound", experiment: 5, activity: 6 },
      { remotePrefixes: ["198.51.100.0/24"], experiment: 7, activity: 8 },
    ],
  }));
  assert.equal(rules.match(conn("192.0.2.1:1094", "203.0.113.9:50000"))?.experimentId, 2);
  // Direction is part of the rule: the same ports outbound match nothing.
  assert.equal(rules.match(conn("192.0.2.1:1094", "203.0.113.9:50000", "outbound")), undefined);
  assert.deepEqual(rules.match(conn("[2001:db8:9::1]:2885", "[2001:db8:1::7]:40000")), {
    experimentId: 3,
    activityId: 4,
    rule: 1,
  });
  assert.equal(rules.match(conn("[2001:db8:9::1]:2891", "[2001:db8:1::7]:40000")), undefined);
  assert.equal(rules.match(conn("[2001:db8:9::1]:2885", "[2001:db8:2::7]:40000")), undefined);
  assert.equal(rules.match(conn("192.0.2.1:40000", "203.0.113.9:443", "outbound"))?.rule, 2);
  assert.equal(rules.match(conn("192.0.2.1:40000", "198.51.100.3:22"))?.rule, 3);
  // An IPv4 prefix never matches an IPv6 address.
  assert.equal(rules.match(conn("[2001:db8:9::1]:40000", "[2001:db8::c633:6403]:22")), undefined);
});

Deno.test("connections rules: an internal remote is never tagged, the defaults cover private, link-local and loopback", () => {
  const rules = new ConnectionRules(ConnectionsSchema.parse({ rules: [{ experiment: 2, activity: 1 }] }));
  for (const remote of ["10.1.2.3:5", "172.20.0.1:5", "192.168.1.1:5", "169.254.3.3:5", "127.0.0.1:5"]) {
    assert.equal(rules.match(conn("192.0.2.1:1094", remote)), undefined, remote);
  }
  for (const remote of ["[fd00::1]:5", "[fe80::1]:5", "[::1]:5"]) {
    assert.equal(rules.match(conn("[2001:db8::1]:1094", remote)), undefined, remote);
  }
  assert.equal(rules.match(conn("192.0.2.1:1094", "203.0.113.9:5"))?.experimentId, 2);
  assert.equal(rules.match(conn("[2001:db8::1]:1094", "[2001:db8::2]:5"))?.experimentId, 2);
  assert.ok(DEFAULT_INTERNAL_NETWORKS.includes("fc00::/7"));
  const none = new ConnectionRules(
    ConnectionsSchema.parse({ rules: [{ experiment: 2, activity: 1 }], internalNetworks: [] }),
  );
  assert.equal(none.match(conn("192.0.2.1:1094", "10.1.2.3:5"))?.experimentId, 2);
});

Deno.test("connections rules: the kernel pre-filter is the hull of the rules' ports, unbounded when a rule takes any", () => {
  const bounds = (rules: unknown[]) =>
    new ConnectionRules(ConnectionsSchema.parse({ rules })).kernelPortBounds();
  assert.deepEqual(
    bounds([{ localPorts: [1094], experiment: 1, activity: 0 }, {
      localPorts: ["2880-2890"],
      experiment: 1,
      activity: 0,
    }]),
    { minSourcePort: 1094, maxSourcePort: 2890, minDestinationPort: 0, maxDestinationPort: 0 },
  );
  assert.deepEqual(
    bounds([{ localPorts: [1094], experiment: 1, activity: 0 }, {
      remotePorts: [443],
      experiment: 1,
      activity: 0,
    }]),
    { minSourcePort: 0, maxSourcePort: 0, minDestinationPort: 0, maxDestinationPort: 0 },
  );
});

Deno.test("connections config: names resolve through the registry, bad input is named", () => {
  const c = loadConfigText(
    `plugins:
  connections:
    rules:
      - {localPorts: [1094], experiment: atlas, activity: default}
`,
    "conf.yaml",
  );
  const rule = c.plugins.connections!.rules[0]!;
  assert.equal(rule.experiment, 2);
  assert.equal(rule.activity, 1);
  assert.equal(c.plugins.connections!.sweepInterval, 60);
  assert.equal(c.plugins.connections!.rules[0]!.direction, "any");

  const bad = (text: string, re: RegExp) => assert.throws(() => loadConfigText(text, "conf.yaml"), re);
  bad(
    'plugins:\n  connections:\n    rules:\n      - {localPorts: ["2890-2880"], experiment: 2, activity: 1}\n',
    /rules\.0\.localPorts\.0.*low first/s,
  );
  bad(
    "plugins:\n  connections:\n    rules:\n      - {experiment: nosuchexperiment, activity: 1}\n",
    /rules\.0\.experiment/,
  );
  bad("plugins:\n  connections:\n    rules: []\n", /at least one rule/);
  bad(
    "plugins:\n  connections:\n    rules:\n      - {direction: sideways, experiment: 2, activity: 1}\n",
    /"inbound"/,
  );
  bad(
    'plugins:\n  connections:\n    rules:\n      - {remotePrefixes: ["10.0.0.0/33"], experiment: 2, activity: 1}\n',
    /address prefix/,
  );
  bad("plugins:\n  connections:\n    rules:\n      - {experiment: 2}\n", /activity/);
  bad(
    "plugins:\n  connections:\n    sweepInterval: 0.01\n    rules:\n      - {experiment: 2, activity: 1}\n",
    /sweepInterval/,
  );
});
