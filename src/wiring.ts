/**
 * The components a configuration asks for, as specs in the original's order: plugins api → firefly →
 * namedPipe → perfsonar → iperf3 (then the additions connections and nats); backends marker → firefly →
 * prometheus → ipfix → nats; enrichers skops → netlink.
 *
 * A spec names its slot (the configuration section), carries the options the component is built from
 * (their JSON is the fingerprint a reload compares, so an unchanged component keeps running) and imports
 * the component's module only when it is created: a command or a configuration pays for what it uses.
 */
import type { Config, NatsConnectionKeys } from "./config/schema.ts";
import type { NatsConnectionSettings } from "./net/nats_connection.ts";
import type { ComponentSpec } from "./core/component.ts";
import { APPLICATION_NAME, VERSION } from "./version.ts";
import { Registry } from "./scitags/registry.ts";
import { registryIdResolver } from "./plugins/pipe_line.ts";
import type { HealthSource } from "./core/health.ts";
import type { ReadinessSource } from "./core/readiness.ts";
import { FlowCounterHub } from "./core/flow_counters.ts";

export type { ComponentSpec } from "./core/component.ts";

/** Facts about the host the components need. */
export interface HostFacts {
  hostname: string;
  /** The SciTags registry in use (experiment and activity names); default: the embedded copy. */
  registry?: () => Registry;
  /** The daemon's health metrics (bus and components), for the prometheus backend to serve. */
  health?: HealthSource;
  /** The daemon's liveness and readiness, for /healthz and /readyz on the API and metrics ports. */
  readiness?: ReadinessSource;
  /** Where the marker offers its per-flow counts and the ipfix exporter reads them (the daemon's one hub). */
  flowCounters?: FlowCounterHub;
}

/** Resolves a path from the configuration: relative paths are relative to workDir. */
export function resolvePath(config: Config, path: string): string {
  if (path.startsWith("/")) return path;
  const base = config.workDir.startsWith("/") ? config.workDir : `${Deno.cwd()}/${config.workDir}`;
  return `${base.replace(/\/+$/, "")}/${path}`;
}

/** The connection keys of a NATS section, its file paths resolved against workDir. */
function natsConnection(config: Config, c: NatsConnectionKeys): NatsConnectionSettings {
  const path = (p: string | undefined) => p === undefined ? undefined : resolvePath(config, p);
  return {
    servers: c.servers,
    connectTimeout: c.connectTimeout,
    ...(c.user !== undefined ? { user: c.user } : {}),
    ...(c.passwordFile !== undefined ? { passwordFile: path(c.passwordFile) } : {}),
    ...(c.tokenFile !== undefined ? { tokenFile: path(c.tokenFile) } : {}),
    ...(c.credsFile !== undefined ? { credsFile: path(c.credsFile) } : {}),
    ...(c.tls
      ? { tls: { caFile: path(c.tls.caFile), certFile: path(c.tls.certFile), keyFile: path(c.tls.keyFile) } }
      : {}),
  };
}

/** The specs of every enabled component, in start order within each kind. */
export function componentSpecs(config: Config, host: HostFacts): ComponentSpec[] {
  const specs: ComponentSpec[] = [];
  const p = config.plugins, b = config.backends, e = config.enrichers;
  const registry = host.registry ?? (() => Registry.embedded());
  const resolveId = registryIdResolver(registry);
  const flowCounters = host.flowCounters ?? new FlowCounterHub();

  if (p.api) {
    const options = {
      bindAddress: p.api.bindAddress,
      bindPort: p.api.bindPort,
      application: APPLICATION_NAME,
      resolveId,
      enableDummyEndpoints: p.api.enableDummyEndpoints,
      tokenFile: p.api.tokenFile === undefined ? undefined : resolvePath(config, p.api.tokenFile),
      limits: {
        maxConnections: p.api.maxConnections,
        headerTimeoutMs: p.api.headerTimeout * 1000,
        bodyTimeoutMs: p.api.bodyTimeout * 1000,
        idleTimeoutMs: p.api.idleTimeout * 1000,
      },
      readiness: host.readiness,
    };
    specs.push({
      kind: "plugin",
      slot: "plugins.api",
      options,
      create: async () => new (await import("./plugins/api.ts")).ApiPlugin(options),
    });
  }
  if (p.firefly) {
    const options = p.firefly;
    specs.push({
      kind: "plugin",
      slot: "plugins.firefly",
      options,
      create: async () => new (await import("./plugins/firefly.ts")).FireflyPlugin(options),
    });
  }
  if (p.namedPipe) {
    const options = {
      pipePath: resolvePath(config, p.namedPipe.pipePath),
      buffSize: p.namedPipe.buffSize,
      pipeMode: p.namedPipe.pipeMode,
      pipeOwner: p.namedPipe.pipeOwner,
      pipeGroup: p.namedPipe.pipeGroup,
      application: APPLICATION_NAME,
      resolveId,
    };
    specs.push({
      kind: "plugin",
      slot: "plugins.namedPipe",
      options,
      create: async () => new (await import("./plugins/named_pipe.ts")).NamedPipePlugin(options),
    });
  }
  if (p.perfsonar) {
    const options = {
      experimentId: p.perfsonar.experimentId,
      activityId: p.perfsonar.activityId,
      application: APPLICATION_NAME,
    };
    specs.push({
      kind: "plugin",
      slot: "plugins.perfsonar",
      options,
      create: async () => new (await import("./plugins/perfsonar.ts")).PerfsonarPlugin(options),
    });
  }
  if (p.iperf3) {
    const options = { config: p.iperf3, application: APPLICATION_NAME };
    specs.push({
      kind: "plugin",
      slot: "plugins.iperf3",
      options,
      create: async () => new (await import("./plugins/iperf3.ts")).Iperf3Plugin(options),
    });
  }
  if (p.connections) {
    const options = { config: p.connections, application: APPLICATION_NAME };
    specs.push({
      kind: "plugin",
      slot: "plugins.connections",
      options,
      create: async () => new (await import("./plugins/connections.ts")).ConnectionsPlugin(options),
    });
  }
  if (p.nats) {
    const options = {
      config: p.nats,
      hostname: host.hostname,
      connection: natsConnection(config, p.nats),
      application: APPLICATION_NAME,
      resolveId,
    };
    specs.push({
      kind: "plugin",
      slot: "plugins.nats",
      options,
      create: async () => new (await import("./plugins/nats.ts")).NatsPlugin(options),
    });
  }

  if (b.marker) {
    const options = { config: b.marker, counters: flowCounters };
    specs.push({
      kind: "backend",
      slot: "backends.marker",
      options,
      create: async () => new (await import("./backends/marker/backend.ts")).MarkerBackend(options),
    });
  }
  if (b.firefly) {
    const options = { config: b.firefly, hostname: host.hostname, appName: APPLICATION_NAME };
    specs.push({
      kind: "backend",
      slot: "backends.firefly",
      options,
      create: async () => new (await import("./backends/firefly.ts")).FireflyBackend(options),
    });
  }
  if (b.prometheus) {
    const options = {
      config: b.prometheus,
      version: VERSION,
      health: host.health,
      readiness: host.readiness,
    };
    specs.push({
      kind: "backend",
      slot: "backends.prometheus",
      options,
      create: async () => new (await import("./backends/prometheus.ts")).PrometheusBackend(options),
    });
  }

  if (b.ipfix) {
    const options = { config: b.ipfix, counters: flowCounters };
    specs.push({
      kind: "backend",
      slot: "backends.ipfix",
      options,
      create: async () => new (await import("./backends/ipfix/backend.ts")).IpfixBackend(options),
    });
  }

  if (b.nats) {
    const c = b.nats;
    const options = {
      config: c,
      hostname: host.hostname,
      appName: APPLICATION_NAME,
      outboxPath: resolvePath(config, c.outboxPath),
      connection: natsConnection(config, c),
    };
    specs.push({
      kind: "backend",
      slot: "backends.nats",
      options,
      create: async () => new (await import("./backends/nats.ts")).NatsBackend(options),
    });
  }

  if (e?.skops) {
    const options = { config: e.skops, periodMs: e.period };
    specs.push({
      kind: "enricher",
      slot: "enrichers.skops",
      options,
      create: async () => new (await import("./enrichers/skops.ts")).SkopsEnricher(options),
    });
  }
  if (e?.netlink) {
    const options = { config: e.netlink, periodMs: e.period };
    specs.push({
      kind: "enricher",
      slot: "enrichers.netlink",
      options,
      create: async () => new (await import("./enrichers/netlink.ts")).NetlinkEnricher(options),
    });
  }
  return specs;
}
