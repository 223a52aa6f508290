/**
 * Where the registry in use comes from: the copy embedded at build time, or, when the `registry` section
 * asks for it, a fresher copy fetched from its URL and cached in workDir.
 *
 * A refresh never holds up the daemon nor stops it: the cached (else embedded) copy is used at once, the
 * fetch runs in the background with a timeout, and a failure is one warning with the copy kept.
 */
import { FileReadError, readBoundedTextFileSync } from "../core/bounded_file.ts";
import type { RegistryConfig } from "../config/schema.ts";
import { errorMessage } from "../core/errors.ts";
import { logger } from "../core/log.ts";
import { Registry } from "./registry.ts";

/** The cache file, in workDir. */
export const REGISTRY_CACHE_FILE = "scitags-registry.json";

/** Answers longer than this are no registry (the real one is about 7 KiB). */
const MAX_REGISTRY_BYTES = 1024 * 1024;

const log = logger("registry");

/** The `registry` section, with times in milliseconds. */
export interface RegistryRefreshSettings {
  readonly url: string;
  /** Path of the cache file. */
  readonly cachePath: string;
  readonly timeoutMs: number;
  /** 0: refresh once at each start; otherwise every this many ms (not at start while the cache is younger). */
  readonly refreshIntervalMs: number;
}

/** The path of the cache file for a workDir (relative workDirs are relative to the current directory). */
export function registryCachePath(workDir: string): string {
  const base = workDir.startsWith("/") ? workDir : `${Deno.cwd()}/${workDir}`;
  return `${base.replace(/\/+$/, "")}/${REGISTRY_CACHE_FILE}`;
}

/** A cached registry and when it was written; undefined when there is none or it is unusable (logged). */
export function readCachedRegistry(path: string): { registry: Registry; writtenMs: number } | undefined {
  let text: string, writtenMs: number;
  try {
    text = readBoundedTextFileSync(path, MAX_REGISTRY_BYTES, "the cached SciTags registry");
    writtenMs = Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch (err) {
    if (!(err instanceof FileReadError && err.missing)) {
      log.warn("cannot read the cached SciTags registry; using the embedded copy", {
        path,
        err: errorMessage(err),
      });
    }
    return undefined;
  }
  try {
    return { registry: Registry.fromJson(text, `cached registry ${path}`), writtenMs };
  } catch (err) {
    log.warn("the cached SciTags registry is not valid; using the embedded copy", {
      path,
      err: errorMessage(err),
    });
    return undefined;
  }
}

/** What a refresh did. */
export type RefreshOutcome = { ok: true; modified: string | undefined } | { ok: false; error: string };

/** The registry in use, and its refreshing when configured. */
export class RegistrySource {
  #current: Registry;
  #origin: string;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inFlight: Promise<RefreshOutcome> | undefined;
  #abort: AbortController | undefined;
  #stopped = false;
  readonly #settings: RegistryRefreshSettings | undefined;
  #cacheWrittenMs = 0;

  private constructor(settings: RegistryRefreshSettings | undefined) {
    this.#settings = settings;
    this.#current = Registry.embedded();
    this.#origin = "embedded";
    if (settings) {
      const cached = readCachedRegistry(settings.cachePath);
      if (cached) {
        this.#current = cached.registry;
        this.#origin = `cache ${settings.cachePath}`;
        this.#cacheWrittenMs = cached.writtenMs;
      }
    }
  }

  /** The embedded registry, never refreshed. */
  static embedded(): RegistrySource {
    return new RegistrySource(undefined);
  }

  /** The cached copy when there is a valid one, else the embedded one; `start()` begins refreshing. */
  static refreshing(settings: RegistryRefreshSettings): RegistrySource {
    return new RegistrySource(settings);
  }

  /** The registry to resolve names with now. */
  current(): Registry {
    return this.#current;
  }

  /** Where the current registry came from: "embedded", "cache PATH" or the URL. */
  get origin(): string {
    return this.#origin;
  }

  /** Schedules refreshes: at once when the cache is missing or stale, else when it becomes stale. */
  start(): void {
    const s = this.#settings;
    if (s === undefined || this.#stopped) return;
    const age = Date.now() - this.#cacheWrittenMs;
    const fresh = this.#cacheWrittenMs > 0 && s.refreshIntervalMs > 0 && age < s.refreshIntervalMs;
    log.debug("SciTags registry in use", { origin: this.#origin, modified: this.#current.modified ?? "-" });
    if (fresh) this.#schedule(s.refreshIntervalMs - age);
    else void this.#refreshAndReschedule();
  }

  /** Fetches the registry now (one at a time); on success it is used and cached, on failure kept as it is. */
  refresh(): Promise<RefreshOutcome> {
    const s = this.#settings;
    if (s === undefined) return Promise.resolve({ ok: false, error: "no registry URL configured" });
    this.#inFlight ??= this.#fetch(s).finally(() => this.#inFlight = undefined);
    return this.#inFlight;
  }

  /** Stops refreshing; an ongoing fetch is abandoned. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abort?.abort();
    await this.#inFlight;
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    // Timers cannot wait longer than about 24.8 days; a longer interval is waited in steps.
    const step = Math.min(Math.max(delayMs, 0), 2 ** 31 - 1);
    this.#timer = setTimeout(() => {
      if (step < delayMs) this.#schedule(delayMs - step);
      else void this.#refreshAndReschedule();
    }, step);
  }

  async #refreshAndReschedule(): Promise<void> {
    await this.refresh();
    const interval = this.#settings?.refreshIntervalMs ?? 0;
    if (interval > 0) this.#schedule(interval);
  }

  async #fetch(s: RegistryRefreshSettings): Promise<RefreshOutcome> {
    const abort = new AbortController();
    this.#abort = abort;
    const timer = setTimeout(() => abort.abort("timeout"), s.timeoutMs);
    let text: string;
    try {
      const response = await fetch(s.url, { signal: abort.signal, headers: { accept: "application/json" } });
      if (!response.ok) {
        await response.body?.cancel();
        throw new Error(`HTTP ${response.status}`);
      }
      const declared = Number(response.headers.get("content-length") ?? "0");
      if (declared > MAX_REGISTRY_BYTES) {
        await response.body?.cancel();
        throw new Error(`answer of ${declared} bytes is too large for a registry`);
      }
      text = await response.text();
      if (text.length > MAX_REGISTRY_BYTES) throw new Error(`answer of ${text.length} bytes is too large`);
    } catch (err) {
      const why = abort.signal.aborted
        ? (abort.signal.reason === "timeout" ? `no answer within ${s.timeoutMs} ms` : "cancelled")
        : errorMessage(err);
      return this.#failed(s, why);
    } finally {
      clearTimeout(timer);
      this.#abort = undefined;
    }
    let registry: Registry;
    try {
      registry = Registry.fromJson(text, s.url);
    } catch (err) {
      return this.#failed(s, errorMessage(err));
    }
    if (this.#stopped) return { ok: false, error: "cancelled" };
    this.#current = registry;
    this.#origin = s.url;
    try {
      const tmp = `${s.cachePath}.tmp`;
      await Deno.writeTextFile(tmp, text);
      await Deno.rename(tmp, s.cachePath);
      this.#cacheWrittenMs = Date.now();
    } catch (err) {
      log.warn("cannot cache the SciTags registry; it is used but fetched again at the next start", {
        path: s.cachePath,
        err: errorMessage(err),
      });
    }
    log.info("SciTags registry refreshed", {
      url: s.url,
      modified: registry.modified ?? "-",
      experiments: registry.experiments.length,
    });
    return { ok: true, modified: registry.modified };
  }

  #failed(s: RegistryRefreshSettings, why: string): RefreshOutcome {
    if (this.#stopped) return { ok: false, error: "cancelled" };
    log.warn(
      `cannot refresh the SciTags registry; using the ${
        this.#origin === "embedded" ? "embedded" : "cached"
      } copy`,
      {
        url: s.url,
        err: why,
        modified: this.#current.modified ?? "-",
      },
    );
    return { ok: false, error: why };
  }
}

/** The registry source a configuration asks for: refreshing when it has a `registry` section, else embedded. */
export function registrySourceFor(config: { workDir: string; registry?: RegistryConfig }): RegistrySource {
  const r = config.registry;
  if (r === undefined) return RegistrySource.embedded();
  return RegistrySource.refreshing({
    url: r.url,
    cachePath: registryCachePath(config.workDir),
    timeoutMs: Math.round(r.timeout * 1000),
    refreshIntervalMs: r.refreshInterval * 1000,
  });
}
