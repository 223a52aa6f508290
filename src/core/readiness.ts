/**
 * Liveness and readiness, as `/healthz` and `/readyz` answer them (on the API port and every metrics port).
 *
 * Live: the daemon's event loop answers and it is not shutting down. Ready: it has started every component
 * and each one says it runs as configured; a degraded or failed component (a marked interface that
 * vanished, ...) makes it not ready, naming the component and why. The body is JSON either way, so a probe
 * can read the reason; the status code (200 or 503) is what load balancers and monitors look at.
 */
import type { ComponentStatus } from "./component.ts";
import { errorMessage } from "./errors.ts";

/** Where the daemon is in its life. */
export type DaemonPhase = "starting" | "running" | "stopping";

export interface ComponentState {
  readonly kind: "plugin" | "backend" | "enricher";
  readonly name: string;
  readonly state: ComponentStatus["state"];
  readonly reason?: string;
}

export interface Readiness {
  readonly phase: DaemonPhase;
  /** Every component's state. */
  readonly components: readonly ComponentState[];
}

/** Asked at every probe; the daemon answers it. */
export type ReadinessSource = () => Readiness;

/** A component's status: its own `status()`, "running" without one, "failed" when it cannot tell. */
export function statusOf(part: { status?(): ComponentStatus }): ComponentStatus {
  try {
    return part.status?.() ?? { state: "running" };
  } catch (err) {
    return { state: "failed", reason: `cannot report its state: ${errorMessage(err)}` };
  }
}

const RANK: Record<ComponentStatus["state"], number> = { running: 0, degraded: 1, failed: 2 };

/** The worst of the states ("running" for none). */
export function worstState(states: Iterable<ComponentStatus["state"]>): ComponentStatus["state"] {
  let worst: ComponentStatus["state"] = "running";
  for (const s of states) if (RANK[s] > RANK[worst]) worst = s;
  return worst;
}

export interface ProbeAnswer {
  readonly status: 200 | 503;
  readonly body: string;
}

const JSON_LINE = (value: unknown) => JSON.stringify(value) + "\n";

/** `/healthz`. */
export function livenessAnswer(r: Readiness): ProbeAnswer {
  return r.phase === "stopping"
    ? { status: 503, body: JSON_LINE({ status: "stopping" }) }
    : { status: 200, body: JSON_LINE({ status: "ok" }) };
}

/** `/readyz`: ready only while running with every component running. */
export function readinessAnswer(r: Readiness): ProbeAnswer {
  if (r.phase !== "running") return { status: 503, body: JSON_LINE({ status: r.phase }) };
  const problems = r.components.filter((c) => c.state !== "running");
  if (problems.length === 0) {
    return { status: 200, body: JSON_LINE({ status: "ready", components: r.components.length }) };
  }
  return {
    status: 503,
    body: JSON_LINE({ status: worstState(problems.map((p) => p.state)), problems }),
  };
}

/** The answer for a probe path, or undefined for any other path. */
export function probeAnswer(path: string, source: ReadinessSource | undefined): ProbeAnswer | undefined {
  if (path !== "/healthz" && path !== "/readyz") return undefined;
  // Without a daemon behind it (a component run on its own, in tests), being asked means being up.
  const r = source?.() ?? { phase: "running", components: [] };
  return path === "/healthz" ? livenessAnswer(r) : readinessAnswer(r);
}
