/**
 * The configuration schema: every key of the original flowd-go (same names, same defaults), plus a few
 * additions, each validated with a message that says what is expected.
 *
 * Sections (a plugin, backend or enricher) are enabled by their presence: `api: {}` enables the API with
 * defaults. Unknown keys are errors everywhere (the original silently ignored typos).
 */
import * as z from "zod";
import { clip } from "../core/clip.ts";
import { IpAddress } from "../net/ip.ts";
import { parsePrefix } from "../net/private_ranges.ts";
import { Registry, RegistryError } from "../scitags/registry.ts";
import { DEFAULT_CONTROL_SOCKET } from "./defaults.ts";

// ---- scalar helpers: one place for the wording of type errors ----

function uint(max: number, what = "an integer") {
  return z.int({ error: (iss) => `expected ${what} in 0..${max}, got ${show(iss.input)}` })
    .min(0, { error: (iss) => `expected ${what} in 0..${max}, got ${show(iss.input)}` })
    .max(max, { error: (iss) => `expected ${what} in 0..${max}, got ${show(iss.input)}` });
}

function intRange(min: number, max: number, what = "an integer") {
  const msg = (iss: { input?: unknown }) => `expected ${what} in ${min}..${max}, got ${show(iss.input)}`;
  return z.int({ error: msg }).min(min, { error: msg }).max(max, { error: msg });
}

const port = () => uint(65535, "a port number");
const bool = () => z.boolean({ error: (iss) => `expected true or false, got ${show(iss.input)}` });
const str = () => z.string({ error: (iss) => `expected a string, got ${show(iss.input)}` });

/** A value as a message quotes it: strings JSON-quoted and clipped to ~200 characters. */
export function show(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "string") return JSON.stringify(clip(v));
  if (Array.isArray(v)) return "a list";
  if (v !== null && typeof v === "object") return "a mapping";
  return String(v);
}

const ipLiteral = () =>
  str().refine((s) => IpAddress.tryParse(s) !== undefined, {
    error: (iss) => `expected an IPv4 or IPv6 address, got ${show(iss.input)}`,
  });

const addressPrefix = () =>
  str().refine((s) => {
    try {
      parsePrefix(s);
      return true;
    } catch {
      return false;
    }
  }, {
    error: (iss) =>
      `expected an address prefix such as 192.0.2.0/24 or 2001:db8::/32, got ${show(iss.input)}`,
  });

const hostPort = () =>
  str().refine(
    (s) => /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):\d{1,5}$/.test(s) && Number(s.split(":").pop()) <= 65535,
    {
      error: (iss) => `expected host:port (IPv6 as [addr]:port), got ${show(iss.input)}`,
    },
  );

/** Seconds, fractions allowed, within bounds (timeouts). */
function seconds(min: number, max: number) {
  const msg = (iss: { input?: unknown }) =>
    `expected a number of seconds in ${min}..${max}, got ${show(iss.input)}`;
  return z.number({ error: msg }).min(min, { error: msg }).max(max, { error: msg });
}

const httpUrl = () =>
  str().refine((s) => {
    try {
      const u = new URL(s);
      return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "";
    } catch {
      return false;
    }
  }, { error: (iss) => `expected an http:// or https:// URL, got ${show(iss.input)}` });

/** A case-insensitive choice among names, normalised to the canonical spelling. */
function choice<const T extends readonly string[]>(names: T) {
  return str().transform((s, ctx) => {
    const hit = names.find((n) => n.toLowerCase() === s.toLowerCase());
    if (hit === undefined) {
      ctx.issues.push({
        code: "custom",
        input: s,
        message: `expected one of ${names.map((n) => JSON.stringify(n)).join(", ")}, got ${show(s)}`,
      });
      return z.NEVER;
    }
    return hit as T[number];
  });
}

// ---- NATS (backends.nats, plugins.nats) ----

/** How enrichment statistics are encoded in ongoing fireflies (backends.firefly, backends.nats). */
export const ENRICHMENT_MODES = ["lean", "compatible", "full"] as const;

const natsUrl = () =>
  str().refine((s) => {
    try {
      const u = new URL(s.includes("://") ? s : `nats://${s}`);
      return ["nats:", "tls:"].includes(u.protocol) && u.hostname !== "";
    } catch {
      return false;
    }
  }, { error: (iss) => `expected a NATS server URL such as nats://host:4222, got ${show(iss.input)}` });

/** A subject of plain tokens (no wildcards, no spaces): what a publish or a prefix may name. */
const natsSubject = () =>
  str().regex(/^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$/, {
    error: (iss) =>
      `expected a NATS subject such as scitags.flows (tokens joined by dots), got ${show(iss.input)}`,
  });

const streamName = () =>
  str().regex(/^[A-Za-z0-9_\-]+$/, {
    error: (iss) => `expected a name of letters, digits, _ and -, got ${show(iss.input)}`,
  });

const filePath = () => str().min(1, { error: "expected a non-empty path" });

export const NatsTlsSchema = z.strictObject({
  /** PEM CA certificate(s) the server's certificate must chain to. */
  caFile: filePath().optional(),
  /** PEM client certificate, with its key, for servers that verify clients. */
  certFile: filePath().optional(),
  keyFile: filePath().optional(),
}).refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), {
  error: "certFile and keyFile go together",
});

/** The connection keys both NATS components share; secrets are only ever read from files. */
const natsConnectionKeys = {
  servers: z.array(natsUrl()).min(1, { error: "expected at least one server" }).default([
    "nats://127.0.0.1:4222",
  ]),
  user: str().min(1).optional(),
  passwordFile: filePath().optional(),
  tokenFile: filePath().optional(),
  credsFile: filePath().optional(),
  tls: NatsTlsSchema.optional(),
  /** Seconds the first connection may take; the component fails to start after that. */
  connectTimeout: seconds(0.1, 120).default(5),
};

/** One way to authenticate at most; a password needs its user. */
function natsAuthCheck(
  c: { user?: string; passwordFile?: string; tokenFile?: string; credsFile?: string },
  ctx: z.RefinementCtx,
): void {
  const ways = [c.user !== undefined, c.tokenFile !== undefined, c.credsFile !== undefined].filter(Boolean);
  if (ways.length > 1) {
    ctx.addIssue({ code: "custom", message: "use one of user (+ passwordFile), tokenFile or credsFile" });
  }
  if (c.passwordFile !== undefined && c.user === undefined) {
    ctx.addIssue({ code: "custom", path: ["passwordFile"], message: "needs user" });
  }
}

export const NatsPluginSchema = z.strictObject({
  ...natsConnectionKeys,
  /** The subject of the control messages; default `scitags.control.<hostname>`. */
  subject: natsSubject().optional(),
  /** The stream that holds the subject. */
  stream: streamName().default("SCITAGS_CONTROL"),
  /** The durable consumer's name; default `flowd-<hostname>`. */
  durable: streamName().optional(),
  /** Create the stream (on the subject) when it does not exist; otherwise it must exist. */
  createStream: bool().default(false),
  replicas: intRange(1, 5, "a number of replicas").default(1),
  /** Seconds the server waits for an acknowledgement before delivering a message again. */
  ackWait: seconds(1, 3600).default(30),
}).superRefine(natsAuthCheck);

export const NatsBackendSchema = z.strictObject({
  ...natsConnectionKeys,
  /** Events go to `<subjectPrefix>.<hostname>.<state>`. */
  subjectPrefix: natsSubject().default("scitags.flows"),
  /** The JetStream stream that holds the subjects. */
  stream: streamName().default("SCITAGS_FLOWS"),
  /** Create the stream (on `<subjectPrefix>.>`) when it does not exist; otherwise it must exist. */
  createStream: bool().default(false),
  /** Replicas of a stream this backend creates (a three-node cluster: 3). */
  replicas: intRange(1, 5, "a number of replicas").default(1),
  /** Publishes waiting for their acknowledgement at once, at most. */
  maxInFlight: intRange(1, 65_536, "a number of messages").default(1024),
  /** Seconds a publish waits for its acknowledgement before it is tried again. */
  ackTimeout: seconds(0.1, 600).default(5),
  /** The outbox file; relative paths are relative to workDir. */
  outboxPath: filePath().default("nats-outbox.log"),
  /** Bytes of unacknowledged documents the outbox holds; events beyond that are refused (counted). */
  outboxMaxBytes: intRange(1 << 16, 2 ** 40, "a size in bytes").default(256 << 20),
  /** Also publish an "ongoing" document for every enrichment sample. */
  enrich: bool().default(false),
  enrichmentMode: choice(ENRICHMENT_MODES).default("lean"),
}).superRefine(natsAuthCheck);

// ---- plugins ----

export const NamedPipeSchema = z.strictObject({
  /** Kept for compatibility: the original's inotify queue length; reads no longer depend on it. */
  maxReaders: uint(1_000_000).default(5),
  /** Bytes read from the FIFO at a time; lines longer than this still arrive whole. */
  buffSize: intRange(1, 16 * 1024 * 1024).default(1000),
  /** FIFO path; relative paths are relative to workDir. */
  pipePath: str().min(1, { error: "expected a non-empty path" }).default("/var/run/flowd-go/np"),
  /** Addition: FIFO permissions as an octal string (the original made it world-writable, 0666). */
  pipeMode: z.string({
    error: (i) => `expected an octal mode as a quoted string such as "0660", got ${show(i.input)}`,
  })
    .regex(/^0?[0-7]{3}$/, { error: (i) => `expected an octal mode such as "0660", got ${show(i.input)}` })
    .default("0660"),
  /** Addition: owner of the FIFO (user name or uid); default: the daemon's user. */
  pipeOwner: z.union([str().min(1), uint(0xffff_fffe)]).optional(),
  /** Addition: group of the FIFO (group name or gid), for example the storage daemon's group. */
  pipeGroup: z.union([str().min(1), uint(0xffff_fffe)]).optional(),
});

/** Additions: the connection cap and timeouts of an HTTP listener (API, metrics); seconds, fractions allowed. */
function httpListenerKeys(maxConnections: number) {
  return {
    maxConnections: intRange(1, 65535, "a number of connections").default(maxConnections),
    headerTimeout: seconds(0.01, 3600).default(10),
    idleTimeout: seconds(0.01, 3600).default(60),
  };
}

export const ApiSchema = z.strictObject({
  /** IPv4 or IPv6 address (or host name) to listen on. */
  bindAddress: str().min(1).default("127.0.0.1"),
  bindPort: port().default(7777),
  ...httpListenerKeys(256),
  bodyTimeout: seconds(0.01, 3600).default(30),
  /** Addition: serve GET /dummy/start and /dummy/end (state changes on a GET: off by default). */
  enableDummyEndpoints: bool().default(false),
  /** Addition: a file whose content (trimmed) is the bearer token POST /flow requires. */
  tokenFile: str().min(1, { error: "expected a non-empty path" }).optional(),
});

export const FireflyPluginSchema = z.strictObject({
  bindAddress: ipLiteral().default("127.0.0.1"),
  bindPort: port().default(10514),
  bufferSize: intRange(2048, 0xffff_ffff, "a buffer size").default(4096),
  /** Seconds; 0 means no read deadline. */
  deadline: uint(0xffff_ffff).default(0),
  hasSyslogHeader: bool().default(false),
  /** Addition: the sources (address prefixes) whose fireflies are taken; default this host only. */
  allowedSources: z.array(addressPrefix(), {
    error: (i) => `expected a list of address prefixes, got ${show(i.input)}`,
  })
    .default(["127.0.0.0/8", "::1/128"]),
  /** Addition: datagrams per second taken from one source address; 0 turns the limit off. */
  rateLimit: z.number({ error: (i) => `expected datagrams per second, got ${show(i.input)}` })
    .min(0, { error: (i) => `expected 0 or more datagrams per second, got ${show(i.input)}` })
    .max(1_000_000, { error: (i) => `expected at most 1000000 datagrams per second, got ${show(i.input)}` })
    .default(1000),
  /** Addition: datagrams a quiet source may send at once before rateLimit applies. */
  rateBurst: intRange(1, 1_000_000, "a number of datagrams").default(2000),
});

/** An experiment or activity: an id, or a SciTags registry name resolved when the file is loaded. */
function idOrName(what: "experiment" | "activity") {
  const msg = (iss: { input?: unknown }) =>
    `expected an ${what} id in 0..${0xffff_ffff} or an ${what} name from the SciTags registry, got ${
      show(iss.input)
    }`;
  return z.union([
    z.int({ error: msg }).min(0, { error: msg }).max(0xffff_ffff, { error: msg }),
    z.string({ error: msg }).trim().min(1, { error: msg }),
  ], { error: msg });
}

type Issues = { issues: z.core.$ZodRawIssue[] };

/** Resolves one experiment/activity pair by id or name; a failure becomes an issue at the path given. */
function resolvePair(
  registry: Registry,
  ctx: Issues,
  experiment: number | string,
  activity: number | string,
  paths: [PropertyKey[], PropertyKey[]],
): [number, number] | undefined {
  let expId: number;
  try {
    expId = registry.experimentId(experiment);
  } catch (err) {
    if (!(err instanceof RegistryError)) throw err;
    ctx.issues.push({ code: "custom", input: experiment, path: paths[0], message: err.message });
    return undefined;
  }
  try {
    return [expId, registry.activityId(expId, activity)];
  } catch (err) {
    if (!(err instanceof RegistryError)) throw err;
    ctx.issues.push({ code: "custom", input: activity, path: paths[1], message: err.message });
    return undefined;
  }
}

/** `plugins.perfsonar`, names resolved with `registry`. */
export function perfsonarSchema(registry: Registry) {
  return z.strictObject({
    experimentId: idOrName("experiment").default(0),
    activityId: idOrName("activity").default(0),
  }).transform((c, ctx) => {
    const ids = resolvePair(registry, ctx, c.experimentId, c.activityId, [["experimentId"], ["activityId"]]);
    return ids ? { experimentId: ids[0], activityId: ids[1] } : z.NEVER;
  });
}

/** `plugins.iperf3`, names in experimentIDs/activityIDs resolved with `registry` (pairwise). */
export function iperf3Schema(registry: Registry) {
  return z.strictObject({
    minSourcePort: port().default(0),
    maxSourcePort: port().default(0),
    minDestinationPort: port().default(0),
    maxDestinationPort: port().default(0),
    /** cgroup v2 directory to attach to; "" means find it automatically. */
    cgroupPath: str().default("/sys/fs/cgroup"),
    programPath: str().default(""),
    debugMode: bool().default(false),
    randomIDs: bool().default(false),
    activityIDs: z.array(idOrName("activity")).default([0, 1, 2]),
    experimentIDs: z.array(idOrName("experiment")).default([0, 1, 2]),
  }).superRefine((c, ctx) => {
    if (c.experimentIDs.length === 0 || c.activityIDs.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["experimentIDs"],
        message: "experimentIDs and activityIDs must not be empty",
      });
    } else if (c.experimentIDs.length !== c.activityIDs.length) {
      ctx.addIssue({
        code: "custom",
        path: ["activityIDs"],
        message:
          `experimentIDs has ${c.experimentIDs.length} entries but activityIDs has ${c.activityIDs.length}`,
      });
    }
    for (
      const [lo, hi] of [["minSourcePort", "maxSourcePort"], [
        "minDestinationPort",
        "maxDestinationPort",
      ]] as const
    ) {
      if (c[lo] !== 0 && c[hi] !== 0 && c[lo] > c[hi]) {
        ctx.addIssue({ code: "custom", path: [lo], message: `${lo} (${c[lo]}) is above ${hi} (${c[hi]})` });
      }
    }
  }).transform((c, ctx) => {
    const experimentIDs: number[] = [], activityIDs: number[] = [];
    c.experimentIDs.forEach((exp, i) => {
      const ids = resolvePair(registry, ctx, exp, c.activityIDs[i]!, [["experimentIDs", i], [
        "activityIDs",
        i,
      ]]);
      if (ids) {
        experimentIDs.push(ids[0]);
        activityIDs.push(ids[1]);
      }
    });
    return experimentIDs.length === c.experimentIDs.length ? { ...c, experimentIDs, activityIDs } : z.NEVER;
  });
}

/** The default `plugins.connections.internalNetworks`: private, shared, link-local and loopback ranges. */
export const DEFAULT_INTERNAL_NETWORKS: readonly string[] = [
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "100.64.0.0/10",
  "169.254.0.0/16",
  "127.0.0.0/8",
  "fc00::/7",
  "fe80::/10",
  "::1/128",
];

export const CONNECTION_DIRECTIONS = ["any", "inbound", "outbound"] as const;

/** A port or an inclusive range "a-b", as [min, max]. */
const portOrRange = () =>
  z.union([port(), str()], {
    error: (i) => `expected a port or a range such as "2880-2890", got ${show(i.input)}`,
  }).transform((v, ctx): [number, number] => {
    if (typeof v === "number") return [v, v];
    const m = /^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$/.exec(v) ?? /^\s*(\d{1,5})\s*$/.exec(v);
    const lo = m ? Number(m[1]) : NaN, hi = m ? Number(m[2] ?? m[1]) : NaN;
    if (!(lo <= 65535 && hi <= 65535 && lo <= hi)) {
      ctx.issues.push({
        code: "custom",
        input: v,
        message: `expected a port or a range "low-high" within 0..65535, low first, got ${show(v)}`,
      });
      return z.NEVER;
    }
    return [lo, hi];
  });

const portList = () =>
  z.array(portOrRange(), { error: (i) => `expected a list of ports or port ranges, got ${show(i.input)}` });
const prefixList = () =>
  z.array(addressPrefix(), { error: (i) => `expected a list of address prefixes, got ${show(i.input)}` });

/** `plugins.connections`, names in the rules resolved with `registry`. */
export function connectionsSchema(registry: Registry) {
  const rule = z.strictObject({
    /** This host's port of the connection; any of these matches (empty: any port). */
    localPorts: portList().default([]),
    remotePorts: portList().default([]),
    localPrefixes: prefixList().default([]),
    remotePrefixes: prefixList().default([]),
    /** inbound: this host accepted the connection; outbound: this host connected. */
    direction: choice(CONNECTION_DIRECTIONS).default("any"),
    experiment: idOrName("experiment"),
    activity: idOrName("activity"),
  }, { error: (i) => `expected a rule (a mapping with experiment and activity), got ${show(i.input)}` });
  return z.strictObject({
    /** First match wins; a connection no rule matches is not reported. */
    rules: z.array(rule, { error: (i) => `expected a list of rules, got ${show(i.input)}` })
      .min(1, { error: "expected at least one rule" }),
    /** Remote addresses never tagged, whatever the rules say. */
    internalNetworks: prefixList().default([...DEFAULT_INTERNAL_NETWORKS]),
    /** Seconds between sock_diag sweeps that repair missed starts and ends; 0 turns them off. */
    sweepInterval: z.number({ error: (i) => `expected a number of seconds, got ${show(i.input)}` })
      .refine((v) => v === 0 || (v >= 0.1 && v <= 86400), {
        error: (i) => `expected 0 (off) or a number of seconds in 0.1..86400, got ${show(i.input)}`,
      }).default(60),
    /** cgroup v2 directory the watcher program is attached to; "" means find it automatically. */
    cgroupPath: str().default("/sys/fs/cgroup"),
    programPath: str().default(""),
    debugMode: bool().default(false),
  }).transform((c, ctx) => {
    const rules: (Omit<typeof c.rules[number], "experiment" | "activity"> & {
      experiment: number;
      activity: number;
    })[] = [];
    c.rules.forEach((r, i) => {
      const paths: [PropertyKey[], PropertyKey[]] = [["rules", i, "experiment"], ["rules", i, "activity"]];
      const ids = resolvePair(registry, ctx, r.experiment, r.activity, paths);
      if (ids) rules.push({ ...r, experiment: ids[0], activity: ids[1] });
    });
    return rules.length === c.rules.length ? { ...c, rules } : z.NEVER;
  });
}

/** `plugins.perfsonar` with names resolved by the embedded registry. */
export const PerfsonarSchema = perfsonarSchema(Registry.embedded());
/** `plugins.iperf3` with names resolved by the embedded registry. */
export const Iperf3Schema = iperf3Schema(Registry.embedded());
/** `plugins.connections` with names resolved by the embedded registry. */
export const ConnectionsSchema = connectionsSchema(Registry.embedded());

/** `plugins`, names resolved with `registry`. */
export function pluginsSchema(registry: Registry) {
  // The embedded registry's sections are built once, at load: every schema built costs start-up time.
  const embedded = registry === Registry.embedded();
  return z.strictObject({
    namedPipe: NamedPipeSchema.optional(),
    api: ApiSchema.optional(),
    firefly: FireflyPluginSchema.optional(),
    perfsonar: (embedded ? PerfsonarSchema : perfsonarSchema(registry)).optional(),
    iperf3: (embedded ? Iperf3Schema : iperf3Schema(registry)).optional(),
    connections: (embedded ? ConnectionsSchema : connectionsSchema(registry)).optional(),
    nats: NatsPluginSchema.optional(),
  });
}

export const PluginsSchema = pluginsSchema(Registry.embedded());

// ---- backends ----

export const MARKING_STRATEGIES = ["label", "hopByHop", "destination", "hopByHopDestination"] as const;
export const ATTACH_MODES = ["auto", "tcx", "tc"] as const;

/** `backends.marker.whenFull`: make room by forgetting the oldest-started flow, or leave the new one unmarked. */
export const WHEN_FULL_POLICIES = ["evictOldest", "refuse"] as const;

export const MarkerSchema = z.strictObject({
  targetInterfaces: z.array(str().min(1)).default(["lo"]),
  discoverInterfaces: bool().default(false),
  removeQdisc: bool().default(true),
  programPath: str().default(""),
  markingStrategy: choice(MARKING_STRATEGIES).default("label"),
  debugMode: bool().default(false),
  matchAll: bool().default(false),
  /** Addition: TCX links where the kernel has them (auto), or force one kind of hook. */
  attachMode: choice(ATTACH_MODES).default("auto"),
  /** Addition: flows the kernel map holds (about 100 bytes of kernel memory each). */
  maxFlows: intRange(1, 10_000_000, "a number of flows").default(100_000),
  /** Addition: what happens to a new flow when the map is full. */
  whenFull: choice(WHEN_FULL_POLICIES).default("evictOldest"),
});

export const StunSchema = z.strictObject({
  /** Private address → public address, applied to any source address. */
  manualMapping: z.record(ipLiteral(), ipLiteral()).default({}).superRefine((m, ctx) => {
    for (const [from, to] of Object.entries(m)) {
      const a = IpAddress.tryParse(from), b = IpAddress.tryParse(to);
      if (a && b && a.family !== b.family) {
        ctx.addIssue({
          code: "custom",
          path: [from],
          message:
            `maps ${a.family} address ${from} to ${b.family} address ${to}; both must be of one family`,
        });
      }
    }
  }),
  stunServers: z.array(hostPort()).default([
    "stun.l.google.com:3478",
    "stun1.l.google.com:3478",
    "stun2.l.google.com:3478",
    "stun3.l.google.com:3478",
    "stun4.l.google.com:3478",
  ]),
  /** Addition: "what is my address" services asked before the STUN servers (the original's two, fixed). */
  httpServers: z.array(httpUrl()).default([
    "https://api64.ipify.org?format=json",
    "https://ipconfig.io/json",
  ]),
  /** Addition: seconds each HTTP query may take (the original had no limit). */
  httpTimeout: seconds(0.05, 60).default(3),
  /** Addition: seconds each STUN query may take, retransmissions included (the original waited 5). */
  stunTimeout: seconds(0.05, 60).default(3),
});

export const FireflyBackendSchema = z.strictObject({
  destinationPort: port().default(10514),
  prependSyslog: bool().default(true),
  /** Addition: also send each firefly to the flow's destination (the SciTags default); false: collector only. */
  sendToDestination: bool().default(true),
  sendToCollector: bool().default(false),
  /** IP address or host name. */
  collectorAddress: str().min(1).default("127.0.0.1"),
  collectorPort: intRange(1, 65535, "a port number").default(10514),
  enrich: bool().default(false),
  /** "lean", "compatible" or "full" ("" also means full, as in the original). */
  enrichmentMode: z.union([z.literal(""), choice(ENRICHMENT_MODES)]).transform((m) => m === "" ? "full" : m)
    .default("lean"),
  stun: StunSchema.optional(),
});

export const PrometheusSchema = z.strictObject({
  log: bool().default(true),
  bindAddress: str().min(1).default("127.0.0.1"),
  netlinkPort: port().default(8080),
  skopsPort: port().default(8081),
  ...httpListenerKeys(32),
});

export const IPFIX_TRANSPORTS = ["udp", "tcp"] as const;

/** IANA's Private Enterprise Number for documentation (RFC 5612): sites put their own. */
export const DOCUMENTATION_PEN = 32473;

export const IpfixCollectorSchema = z.strictObject({
  /** IP address or host name (resolved once, at start). */
  address: str().min(1, { error: "expected a host name or an IP address" }),
  port: intRange(1, 65535, "a port number").default(4739),
  transport: choice(IPFIX_TRANSPORTS).default("udp"),
});

/** Addition: IPFIX export of the marked flows (RFC 7011). */
export const IpfixSchema = z.strictObject({
  collectors: z.array(IpfixCollectorSchema).min(1, { error: "expected at least one collector" }),
  observationDomainId: uint(0xffff_ffff, "an observation domain id").default(0),
  /** UDP: seconds between template resends. */
  templateRefresh: seconds(0.1, 86_400).default(60),
  /** UDP: messages between template resends; 0: by time only. */
  templateRefreshPackets: uint(1_000_000, "a number of messages").default(100),
  /** Seconds between two records of a long flow. */
  activeTimeout: seconds(0.1, 86_400).default(60),
  /** The enterprise number the SciTags elements are defined under. */
  privateEnterpriseNumber: intRange(1, 0xffff_ffff, "a Private Enterprise Number").default(DOCUMENTATION_PEN),
  /** Messages fit this MTU with their IP and UDP headers (no IP fragmentation). */
  pathMtu: intRange(576, 65_535, "an MTU in bytes").default(1500),
});

export const BackendsSchema = z.strictObject({
  marker: MarkerSchema.optional(),
  firefly: FireflyBackendSchema.optional(),
  prometheus: PrometheusSchema.optional(),
  ipfix: IpfixSchema.optional(),
  nats: NatsBackendSchema.optional(),
});

// ---- enrichers ----

export const NetlinkEnricherSchema = z.strictObject({
  protocol: uint(255, "an IP protocol number").default(6),
  ext: uint(255, "a bitmask").default(255),
  state: uint(0xffff_ffff, "a bitmask").default(0xbff),
});

export const SKOPS_STRATEGIES = ["poll", "transition"] as const;

export const SkopsEnricherSchema = z.strictObject({
  /** cgroup v2 directory to attach to; "" means find it automatically. */
  cgroupPath: str().default("/sys/fs/cgroup"),
  programPath: str().default(""),
  debugMode: bool().default(false),
  strategy: choice(SKOPS_STRATEGIES).default("poll"),
});

export const EnrichersSchema = z.strictObject({
  /** Milliseconds between two samples of a flow. */
  period: intRange(10, 86_400_000, "a period in milliseconds").default(1000),
  netlink: NetlinkEnricherSchema.optional(),
  skops: SkopsEnricherSchema.optional(),
});

// ---- top level ----

/** Addition: refreshing the SciTags registry (experiment and activity names) from its URL. */
export const RegistrySchema = z.strictObject({
  url: httpUrl().default("https://scitags.org/api.json"),
  /** Seconds between refreshes; 0: once at each start only. */
  refreshInterval: z.int({
    error: (i) => `expected 0 or a number of seconds of at least 60, got ${show(i.input)}`,
  })
    .refine((n) => n === 0 || (n >= 60 && n <= 31_536_000), {
      error: (i) => `expected 0 or a number of seconds in 60..31536000, got ${show(i.input)}`,
    })
    .default(86_400),
  /** Seconds a refresh may take. */
  timeout: seconds(0.05, 60).default(5),
});

/** The whole configuration, experiment and activity names resolved with `registry`. */
export function configSchema(registry: Registry) {
  return z.strictObject({
    /** "" disables the PID file. */
    pidPath: str().default("/var/run/flowd-go.pid"),
    /** Created at start; relative paths of the configuration are relative to it. */
    workDir: str().min(1, { error: "expected a non-empty path" }).default("/var/cache/flowd-go"),
    /** Addition: the local control socket of `flowd-go flows` and `status`; "" disables it. */
    controlSocket: str().default(DEFAULT_CONTROL_SOCKET),
    plugins: (registry === Registry.embedded() ? PluginsSchema : pluginsSchema(registry)).default({}),
    backends: BackendsSchema.default({}).superRefine((b, ctx) => {
      if (b.ipfix && !b.marker) {
        ctx.addIssue({
          code: "custom",
          path: ["ipfix"],
          message:
            "needs backends.marker: the records' packet and byte counts are the marker's kernel counters",
        });
      }
    }),
    enrichers: EnrichersSchema.optional(),
    registry: RegistrySchema.optional(),
  });
}

/** The configuration schema with the embedded registry (key listings, defaults). */
export const ConfigSchema = configSchema(Registry.embedded());

/** The effective configuration, defaults applied. */
export type Config = z.output<typeof ConfigSchema>;
export type NamedPipeConfig = z.output<typeof NamedPipeSchema>;
export type ApiConfig = z.output<typeof ApiSchema>;
export type FireflyPluginConfig = z.output<typeof FireflyPluginSchema>;
export type PerfsonarConfig = z.output<typeof PerfsonarSchema>;
export type Iperf3Config = z.output<typeof Iperf3Schema>;
export type ConnectionsConfig = z.output<typeof ConnectionsSchema>;
export type MarkerConfig = z.output<typeof MarkerSchema>;
export type FireflyBackendConfig = z.output<typeof FireflyBackendSchema>;
export type StunConfig = z.output<typeof StunSchema>;
export type PrometheusConfig = z.output<typeof PrometheusSchema>;
export type IpfixConfig = z.output<typeof IpfixSchema>;
export type NatsBackendConfig = z.output<typeof NatsBackendSchema>;
export type NatsPluginConfig = z.output<typeof NatsPluginSchema>;
/** The connection keys both NATS sections have. */
export type NatsConnectionKeys = Pick<
  NatsBackendConfig,
  "servers" | "user" | "passwordFile" | "tokenFile" | "credsFile" | "tls" | "connectTimeout"
>;
export type EnrichersConfig = z.output<typeof EnrichersSchema>;
export type NetlinkEnricherConfig = z.output<typeof NetlinkEnricherSchema>;
export type SkopsEnricherConfig = z.output<typeof SkopsEnricherSchema>;
export type RegistryConfig = z.output<typeof RegistrySchema>;

/** Paths of the keys whose value is a section (enabled by presence); a null there is an error. */
export const SECTION_PATHS: readonly string[] = [
  "plugins.namedPipe",
  "plugins.api",
  "plugins.firefly",
  "plugins.perfsonar",
  "plugins.iperf3",
  "plugins.connections",
  "plugins.nats",
  "plugins.nats.tls",
  "backends.marker",
  "backends.firefly",
  "backends.prometheus",
  "backends.ipfix",
  "backends.nats",
  "backends.nats.tls",
  "backends.firefly.stun",
  "enrichers.netlink",
  "enrichers.skops",
  "registry",
];

/** Paths of grouping keys: a null there means an empty group (nothing enabled). */
export const GROUP_PATHS: readonly string[] = ["plugins", "backends", "enrichers"];
