/**
 * Builds the components a configuration asks for, in the original's order: plugins api → firefly →
 * namedPipe → perfsonar → iperf3; backends marker → firefly → prometheus; enrichers skops → netlink.
 */
import type { Config } from "./config/schema.ts";
import type { Components } from "./core/supervisor.ts";
import type { Backend, Enricher, Plugin } from "./core/component.ts";
import { ApiPlugin } from "./plugins/api.ts";
import { NamedPipePlugin } from "./plugins/named_pipe.ts";
import { FireflyPlugin } from "./plugins/firefly.ts";
import { FireflyBackend } from "./backends/firefly.ts";
import { MarkerBackend } from "./backends/marker/backend.ts";
import { PerfsonarPlugin } from "./plugins/perfsonar.ts";
import { PrometheusBackend } from "./backends/prometheus.ts";
import { Iperf3Plugin } from "./plugins/iperf3.ts";
import { NetlinkEnricher } from "./enrichers/netlink.ts";
import { SkopsEnricher } from "./enrichers/skops.ts";
import { APPLICATION_NAME, VERSION } from "./version.ts";
import { Registry } from "./scitags/registry.ts";
import { registryIdResolver } from "./plugins/pipe_line.ts";
import type { HealthSource } from "./core/health.ts";

/** Facts about the host the components need. */
export interface HostFacts {
  hostname: string;
  /** The SciTags registry in use (experiment and activity names); default: the embedded copy. */
  registry?: () => Registry;
  /** The daemon's health metrics (bus and components), for the prometheus backend to serve. */
  health?: HealthSource;
}

/** Resolves a path from the configuration: relative paths are relative to workDir. */
export function resolvePath(config: Config, path: string): string {
  if (path.startsWith("/")) return path;
  const base = config.workDir.startsWith("/") ? config.workDir : `${Deno.cwd()}/${config.workDir}`;
  return `${base.replace(/\/+$/, "")}/${path}`;
}

/** Creates (without starting) every enabled component. */
export function buildComponents(config: Config, host: HostFacts): Components {
  const plugins: Plugin[] = [];
  const backends: Backend[] = [];
  const enrichers: Enricher[] = [];
  const p = config.plugins, b = config.backends, e = config.enrichers;
  const registry = host.registry ?? (() => Registry.embedded());
  const resolveId = registryIdResolver(registry);

  if (p.api) {
    plugins.push(
      new ApiPlugin({
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
      }),
    );
  }
  if (p.firefly) plugins.push(new FireflyPlugin(p.firefly));
  if (p.namedPipe) {
    plugins.push(
      new NamedPipePlugin({
        pipePath: resolvePath(config, p.namedPipe.pipePath),
        buffSize: p.namedPipe.buffSize,
        pipeMode: p.namedPipe.pipeMode,
        pipeOwner: p.namedPipe.pipeOwner,
        pipeGroup: p.namedPipe.pipeGroup,
        application: APPLICATION_NAME,
        resolveId,
      }),
    );
  }
  if (p.perfsonar) {
    plugins.push(
      new PerfsonarPlugin({
        experimentId: p.perfsonar.experimentId,
        activityId: p.perfsonar.activityId,
        application: APPLICATION_NAME,
      }),
    );
  }
  if (p.iperf3) plugins.push(new Iperf3Plugin({ config: p.iperf3, application: APPLICATION_NAME }));

  if (b.marker) backends.push(new MarkerBackend({ config: b.marker }));
  if (b.firefly) {
    backends.push(
      new FireflyBackend({ config: b.firefly, hostname: host.hostname, appName: APPLICATION_NAME }),
    );
  }
  if (b.prometheus) {
    backends.push(new PrometheusBackend({ config: b.prometheus, version: VERSION, health: host.health }));
  }

  if (e?.skops) enrichers.push(new SkopsEnricher({ config: e.skops, periodMs: e.period }));
  if (e?.netlink) enrichers.push(new NetlinkEnricher({ config: e.netlink, periodMs: e.period }));

  return { plugins, backends, enrichers };
}
