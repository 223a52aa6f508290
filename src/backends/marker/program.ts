/**
 * The loaded marker: the BPF object configured for one strategy, and its maps.
 *
 * One object serves every strategy; its behaviour comes from `struct marker_config` in `.rodata.config`,
 * set before load, so the verifier removes the code paths the configuration cannot take. Interfaces
 * without an Ethernet header need a second program instance (configured for that link layer); it is
 * loaded on first use and shares the first instance's maps, so one map update marks on every interface.
 */
import {
  BpfObject,
  LibbpfError,
  libbpfVersion,
  mapDelete,
  mapKeys,
  mapLookup,
  mapLookupInto,
  mapUpdate,
  possibleCpus,
  progInfo,
} from "../../../ffi/libbpf.ts";
import { logger } from "../../core/log.ts";
import { errorMessage } from "../../core/errors.ts";
import { SharedMapping } from "../../../ffi/libc.ts";
import { decodeFlowKey, encodeFlowKey, encodeFlowKeyInto, type FlowIdentity } from "./flow_key.ts";
import {
  CONFIG_MAP_NAME,
  CONFIG_SIZE,
  COUNTERS_MAP_NAME,
  decodeCounterSlot,
  decodeMatchAll,
  decodeTag,
  DEFAULT_MAX_FLOWS,
  encodeConfig,
  encodeFlowValueInto,
  encodeMatchAll,
  FLOW_COUNTERS_SIZE,
  FLOW_KEY_SIZE,
  FLOW_MAP_NAME,
  FLOW_VALUE_SIZE,
  type FlowCounters,
  type LinkLayer,
  type MarkingStrategy,
  MATCH_ALL_MAP_NAME,
  MATCH_ALL_VALUE_SIZE,
  PROGRAM_NAME,
  sumCounters,
  TAG_ONLY_VALUE_SIZE,
} from "./layout.ts";
import { builtMarkerObject, programFileObject } from "./object_bytes.ts";

const log = logger("backends", "marker");

/** How to load the marker. */
export interface MarkerProgramOptions {
  strategy: MarkingStrategy;
  /** Mark every IPv6 packet with the one match-all tag instead of looking flows up. */
  matchAll: boolean;
  /** The match-all tag to install right away (otherwise a wildcard start event sets it). */
  matchAllTag?: number;
  /** Load the variant with bpf_printk traces (read them from /sys/kernel/tracing/trace_pipe). */
  debug: boolean;
  /** A user-supplied object file instead of the built one ("" = built one). */
  programPath?: string;
  /** The object's bytes, bypassing both files (tests, embedded packaging). */
  objectBytes?: Uint8Array;
  /** Capacity of the flow map (default 100000); the backend decides what goes when it is full. */
  maxFlows?: number;
  /** Maps of a leftover marker to load onto instead of new ones (adoption.ts; the caller keeps its fds). */
  adopt?: { flowLabelsFd: number; flowCountersFd: number };
}

/** A program instance for one link layer. */
interface Instance {
  readonly object: BpfObject;
  readonly progFd: number;
  readonly progId: number;
}

/** Entries of the flow map, for listings. */
export interface FlowEntry {
  readonly flow: FlowIdentity;
  readonly tag: number;
  /** Its slot in flowCounters; undefined with an object that has no counters. */
  readonly counterSlot: number | undefined;
}

/** Flow map size when match-all makes it unused. */
const MATCH_ALL_FLOW_CAPACITY = 1;

/**
 * The per-CPU cache in front of flowLabels (bpf/marker.h struct flow_cache_slot) and the generation that
 * validates it. The kernel trusts a slot only while flowGeneration holds the value it was filled under, so
 * every change of flowLabels is followed by a bump. Both are optional (a user-supplied object may lack them).
 */
const CACHE_MAP_NAME = "flowCache";
const GENERATION_MAP_NAME = "flowGeneration";
const GENERATION_SIZE = 8;
/** What is mapped of the generation map: its one value, in a page. */
const GENERATION_PAGE = 4096;

/** The marker object(s) loaded into the kernel, with their shared maps. */
export class MarkerProgram implements Disposable {
  readonly strategy: MarkingStrategy;
  readonly matchAll: boolean;
  /** Where the object came from, for messages. */
  readonly source: string;
  readonly #bytes: Uint8Array;
  readonly #maxFlows: number;
  readonly #adopt: MarkerProgramOptions["adopt"];
  readonly #instances = new Map<LinkLayer, Instance>();
  #flowFd = -1;
  /** flowLabels' value size: FLOW_VALUE_SIZE, or TAG_ONLY_VALUE_SIZE for an object without counters. */
  #flowValueSize = FLOW_VALUE_SIZE;
  #countersFd = -1;
  #matchAllFd = -1;
  #cacheFd = -1;
  #generationFd = -1;
  #generation = 0n;
  /** The generation's value in the kernel's own page, when the map can be mapped (bumped without a syscall). */
  #generationMapping: SharedMapping | undefined;
  #generationWord: BigUint64Array | undefined;
  #configurable = true;
  #closed = false;
  /** Key and value buffers reused by every update (the FFI call is synchronous). */
  readonly #keyScratch = new Uint8Array(FLOW_KEY_SIZE);
  #valueScratch = new Uint8Array(FLOW_VALUE_SIZE);
  #valueView = new DataView(this.#valueScratch.buffer);
  /** Zeroes for every CPU's share of one counter slot, and the buffer its lookups fill. */
  #zeroCounters: Uint8Array<ArrayBuffer> | undefined;
  #countersScratch: Uint8Array<ArrayBuffer> | undefined;
  readonly #slotKey = new Uint8Array(4);
  readonly #slotKeyView = new DataView(this.#slotKey.buffer);

  private constructor(opts: MarkerProgramOptions, bytes: Uint8Array, source: string) {
    this.strategy = opts.strategy;
    this.matchAll = opts.matchAll;
    this.source = source;
    this.#bytes = bytes;
    this.#maxFlows = opts.matchAll ? MATCH_ALL_FLOW_CAPACITY : opts.maxFlows ?? DEFAULT_MAX_FLOWS;
    this.#adopt = opts.matchAll ? undefined : opts.adopt;
  }

  /** Reads the object and loads the instance for Ethernet devices; throws naming what went wrong. */
  static async load(opts: MarkerProgramOptions): Promise<MarkerProgram> {
    let bytes: Uint8Array;
    let source: string;
    if (opts.objectBytes) {
      bytes = opts.objectBytes;
      source = "object bytes";
    } else if (opts.programPath) {
      bytes = await programFileObject(opts.programPath);
      source = opts.programPath;
    } else {
      ({ bytes, source } = builtMarkerObject(opts.debug));
    }
    const program = new MarkerProgram(opts, bytes, source);
    try {
      program.#instance("ethernet");
      if (opts.matchAllTag !== undefined) program.setMatchAllTag(opts.matchAllTag);
    } catch (err) {
      program.close();
      throw err;
    }
    return program;
  }

  /** The program fd for interfaces with this link layer, loading that instance if needed. */
  programFd(linkLayer: LinkLayer): number {
    return this.#instance(linkLayer).progFd;
  }

  /** True when cache invalidation goes through the mapped page (no syscall per bump); for inspection. */
  get generationMapped(): boolean {
    return this.#generationWord !== undefined;
  }

  /** Entries the flow map holds at most. */
  get maxFlows(): number {
    return this.#maxFlows;
  }

  /** The kernel id of the program for this link layer, loading that instance if needed. */
  programId(linkLayer: LinkLayer): number {
    return this.#instance(linkLayer).progId;
  }

  /** True when the object counts marked packets per flow (flowCounters); a user-supplied one may not. */
  get counting(): boolean {
    return this.#countersFd >= 0;
  }

  /**
   * Starts (or changes) the marking of a flow with a tag computed by flowTag(); its packets are counted in
   * `counterSlot` (below maxFlows, owned by this flow alone; ignored by an object without counters).
   */
  setFlow(flow: FlowIdentity, tag: number, counterSlot = 0): void {
    encodeFlowValueInto(this.#valueView, tag, counterSlot);
    mapUpdate(this.#fd("flow"), encodeFlowKeyInto(flow, this.#keyScratch), this.#valueScratch);
    this.#bumpGeneration();
  }

  /** Zeroes a counter slot on every CPU (before a new flow takes a slot an earlier one used). */
  resetCounters(counterSlot: number): void {
    if (this.#countersFd < 0) return;
    this.#zeroCounters ??= new Uint8Array(possibleCpus() * FLOW_COUNTERS_SIZE);
    mapUpdate(this.#countersFd, this.#slotKeyOf(counterSlot), this.#zeroCounters);
  }

  /** A slot's counters summed over the CPUs, read while marking goes on; undefined without counters. */
  counters(counterSlot: number): FlowCounters | undefined {
    if (this.#countersFd < 0) return undefined;
    const cpus = possibleCpus();
    this.#countersScratch ??= new Uint8Array(cpus * FLOW_COUNTERS_SIZE);
    const value = this.#countersScratch;
    if (!mapLookupInto(this.#countersFd, this.#slotKeyOf(counterSlot), value)) return undefined;
    return sumCounters(value, cpus);
  }

  /** Stops marking a flow; false when it was not being marked. */
  deleteFlow(flow: FlowIdentity): boolean {
    const deleted = mapDelete(this.#fd("flow"), encodeFlowKeyInto(flow, this.#keyScratch));
    if (deleted) this.#bumpGeneration();
    return deleted;
  }

  /** The tag a flow is marked with, or undefined. */
  flowTag(flow: FlowIdentity): number | undefined {
    return this.flowEntry(flow)?.tag;
  }

  /** A flow's entry in the kernel map, or undefined. */
  flowEntry(flow: FlowIdentity): FlowEntry | undefined {
    const value = mapLookup(this.#fd("flow"), encodeFlowKey(flow), this.#flowValueSize);
    if (value === undefined) return undefined;
    return { flow, tag: decodeTag(value), counterSlot: this.counting ? decodeCounterSlot(value) : undefined };
  }

  /** Every flow being marked (a snapshot). */
  flows(): FlowEntry[] {
    const fd = this.#fd("flow");
    const out: FlowEntry[] = [];
    for (const key of mapKeys(fd, FLOW_KEY_SIZE)) {
      const value = mapLookup(fd, new Uint8Array(key), this.#flowValueSize);
      if (value === undefined) continue;
      out.push({
        flow: decodeFlowKey(key),
        tag: decodeTag(value),
        counterSlot: this.counting ? decodeCounterSlot(value) : undefined,
      });
    }
    return out;
  }

  /** Sets the match-all tag, or stops match-all marking with undefined. */
  setMatchAllTag(tag: number | undefined): void {
    mapUpdate(this.#fd("matchAll"), new Uint8Array(4), encodeMatchAll(tag));
  }

  /** The match-all tag in force, if any. */
  matchAllTag(): number | undefined {
    const value = mapLookup(this.#fd("matchAll"), new Uint8Array(4), MATCH_ALL_VALUE_SIZE);
    return value === undefined ? undefined : decodeMatchAll(value);
  }

  /** Unloads every instance. Programs still attached through links or tc filters live on until detached. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#generationWord = undefined;
    this.#generationMapping?.close();
    this.#generationMapping = undefined;
    for (const i of this.#instances.values()) i.object.close();
    this.#instances.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #slotKeyOf(counterSlot: number): Uint8Array<ArrayBuffer> {
    this.#slotKeyView.setUint32(0, counterSlot >>> 0, true);
    return this.#slotKey;
  }

  /** Invalidates every CPU's cached lookups: called after each change of flowLabels. */
  #bumpGeneration(): void {
    if (this.#generationFd < 0) return;
    if (this.#generationWord) {
      // One locked add on the shared page: a full barrier after the flowLabels update (the syscall before).
      Atomics.add(this.#generationWord, 0, 1n);
      return;
    }
    this.#generation++;
    const value = new Uint8Array(GENERATION_SIZE);
    new DataView(value.buffer).setBigUint64(0, this.#generation, true);
    mapUpdate(this.#generationFd, new Uint8Array(4), value);
  }

  /** Maps the generation map's page if the object made it mappable; else bumps go through the syscall. */
  #mapGeneration(): void {
    try {
      this.#generationMapping = SharedMapping.open(this.#generationFd, GENERATION_PAGE);
      this.#generationWord = new BigUint64Array(this.#generationMapping.buffer, 0, 1);
    } catch (err) {
      log.debug("the flow generation is not mappable; bumped with map updates", { err: errorMessage(err) });
    }
  }

  #fd(which: "flow" | "matchAll"): number {
    if (this.#closed) throw new Error("the marker program is closed");
    const fd = which === "flow" ? this.#flowFd : this.#matchAllFd;
    if (fd < 0) {
      throw new Error(
        `the marker object (${this.source}) has no ${
          which === "flow" ? FLOW_MAP_NAME : MATCH_ALL_MAP_NAME
        } map`,
      );
    }
    return fd;
  }

  #instance(linkLayer: LinkLayer): Instance {
    if (this.#closed) throw new Error("the marker program is closed");
    const existing = this.#instances.get(linkLayer);
    if (existing) return existing;
    if (!this.#configurable && linkLayer !== "ethernet") {
      throw new Error(
        `the marker object (${this.source}) has no ${CONFIG_MAP_NAME} section, so it cannot be set up for ` +
          `interfaces without an Ethernet header`,
      );
    }
    const object = BpfObject.openMem(this.#bytes, PROGRAM_NAME);
    try {
      const instance = this.#prepareAndLoad(object, linkLayer);
      this.#instances.set(linkLayer, instance);
      log.debug("marker program loaded", {
        source: this.source,
        linkLayer,
        strategy: this.strategy,
        matchAll: this.matchAll,
        progId: instance.progId,
        libbpf: libbpfVersion(),
      });
      return instance;
    } catch (err) {
      object.close();
      if (err instanceof LibbpfError) {
        throw new Error(
          `loading the marker (${this.source}) for ${linkLayer} interfaces failed: ${err.message}`,
          {
            cause: err,
          },
        );
      }
      throw err;
    }
  }

  #prepareAndLoad(object: BpfObject, linkLayer: LinkLayer): Instance {
    const what = `the marker object (${this.source})`;
    const program = object.findProgram(PROGRAM_NAME);
    if (!program) throw new Error(`${what} has no program named ${PROGRAM_NAME}`);
    const flows = object.findMap(FLOW_MAP_NAME);
    if (!flows) throw new Error(`${what} has no map named ${FLOW_MAP_NAME}`);
    if (
      flows.keySize !== FLOW_KEY_SIZE ||
      (flows.valueSize !== FLOW_VALUE_SIZE && flows.valueSize !== TAG_ONLY_VALUE_SIZE)
    ) {
      throw new Error(
        `${what}: map ${FLOW_MAP_NAME} has ${flows.keySize}-byte keys and ${flows.valueSize}-byte values; ` +
          `the loader writes ${FLOW_KEY_SIZE}-byte keys (bpf/marker.h struct flow_key) and ` +
          `${FLOW_VALUE_SIZE}-byte values (struct flow_value), or ${TAG_ONLY_VALUE_SIZE}-byte tags`,
      );
    }
    const counters = object.findMap(COUNTERS_MAP_NAME);
    if (flows.valueSize === FLOW_VALUE_SIZE) {
      if (!counters || counters.keySize !== 4 || counters.valueSize !== FLOW_COUNTERS_SIZE) {
        throw new Error(
          `${what}: its ${FLOW_MAP_NAME} values carry counter slots, but it has no ${COUNTERS_MAP_NAME} map ` +
            `of ${FLOW_COUNTERS_SIZE}-byte struct flow_counters`,
        );
      }
    }
    const matchAll = object.findMap(MATCH_ALL_MAP_NAME);
    if (matchAll && (matchAll.keySize !== 4 || matchAll.valueSize !== MATCH_ALL_VALUE_SIZE)) {
      throw new Error(`${what}: map ${MATCH_ALL_MAP_NAME} does not hold a struct match_all_value`);
    }
    if (this.matchAll && !matchAll) {
      throw new Error(`${what} has no ${MATCH_ALL_MAP_NAME} map, needed by matchAll`);
    }

    const config = object.findMap(CONFIG_MAP_NAME);
    if (config) {
      if (config.valueSize !== CONFIG_SIZE) {
        throw new Error(
          `${what}: ${CONFIG_MAP_NAME} has ${config.valueSize} bytes, not a ${CONFIG_SIZE}-byte config`,
        );
      }
      config.setInitialValue(encodeConfig({ strategy: this.strategy, matchAll: this.matchAll, linkLayer }));
    } else {
      this.#configurable = false;
      log.warn("the marker object has no configuration section; its own strategy and matchAll apply", {
        source: this.source,
        section: CONFIG_MAP_NAME,
      });
    }

    const cache = object.findMap(CACHE_MAP_NAME);
    const generation = object.findMap(GENERATION_MAP_NAME);
    if (generation && generation.valueSize !== GENERATION_SIZE) {
      throw new Error(`${what}: map ${GENERATION_MAP_NAME} does not hold a u64 generation`);
    }

    const countsFlows = flows.valueSize === FLOW_VALUE_SIZE;
    const first = this.#instances.size === 0;
    if (first && this.#adopt && countsFlows) {
      // libbpf takes its own duplicate of each fd: the entries and counts live on in the shared maps.
      flows.reuseFd(this.#adopt.flowLabelsFd);
      counters!.reuseFd(this.#adopt.flowCountersFd);
    } else if (first) {
      flows.setMaxEntries(this.#maxFlows);
      // One slot per flow the map can hold (slot 0 serves match-all).
      if (countsFlows) counters!.setMaxEntries(this.#maxFlows);
    } else {
      flows.reuseFd(this.#flowFd);
      if (countsFlows && this.#countersFd >= 0) counters!.reuseFd(this.#countersFd);
      if (matchAll && this.#matchAllFd >= 0) matchAll.reuseFd(this.#matchAllFd);
      if (cache && this.#cacheFd >= 0) cache.reuseFd(this.#cacheFd);
      if (generation && this.#generationFd >= 0) generation.reuseFd(this.#generationFd);
    }
    object.load();
    if (first) {
      this.#flowFd = flows.fd;
      this.#flowValueSize = flows.valueSize;
      this.#countersFd = countsFlows ? counters!.fd : -1;
      if (!countsFlows) {
        this.#valueScratch = new Uint8Array(TAG_ONLY_VALUE_SIZE);
        this.#valueView = new DataView(this.#valueScratch.buffer);
        log.info("the marker object has no per-flow counters; packets marked are not counted", {
          source: this.source,
        });
      }
      this.#matchAllFd = matchAll ? matchAll.fd : -1;
      this.#cacheFd = cache ? cache.fd : -1;
      this.#generationFd = generation ? generation.fd : -1;
      if (this.#generationFd >= 0) this.#mapGeneration();
      // Generation 0 means "never trust a slot"; from 1 on, slots filled under the current value are valid.
      this.#bumpGeneration();
    }
    const progFd = program.fd;
    return { object, progFd, progId: progInfo(progFd).id };
  }
}
