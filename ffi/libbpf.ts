/**
 * Typed bindings to the system libbpf (libbpf.so.1, 1.1 or later): objects, programs, maps, tc hooks,
 * links (TCX through bpf_link_create) and BPF_PROG_TEST_RUN.
 *
 * Structs are built in byte arrays from one table of sizes and offsets (`LAYOUT`), checked against
 * libbpf 1.1.2's headers on x86-64 by a test; every `sz` field holds the exact struct size. Failures throw a
 * `LibbpfError` carrying the function, errno, libbpf's error text and the warnings libbpf printed
 * during the call (the verifier log of a rejected program, for example). libbpf's own log goes to
 * the "bpf" logger. Every call is synchronous: errno of pointer-returning calls is read right after.
 */
import { logger } from "../src/core/log.ts";
import { closeFd, cString, formatVaList, lastErrno } from "./libc_net.ts";

const SYMBOLS = {
  libbpf_major_version: { parameters: [], result: "u32" },
  libbpf_minor_version: { parameters: [], result: "u32" },
  libbpf_set_print: { parameters: ["function"], result: "pointer" },
  libbpf_strerror: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  libbpf_num_possible_cpus: { parameters: [], result: "i32" },
  bpf_object__open_mem: { parameters: ["buffer", "usize", "buffer"], result: "pointer" },
  bpf_object__load: { parameters: ["pointer"], result: "i32" },
  bpf_object__close: { parameters: ["pointer"], result: "void" },
  bpf_object__find_program_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_object__find_map_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_program__fd: { parameters: ["pointer"], result: "i32" },
  bpf_map__fd: { parameters: ["pointer"], result: "i32" },
  bpf_map__key_size: { parameters: ["pointer"], result: "u32" },
  bpf_map__value_size: { parameters: ["pointer"], result: "u32" },
  bpf_map__max_entries: { parameters: ["pointer"], result: "u32" },
  bpf_map__set_max_entries: { parameters: ["pointer", "u32"], result: "i32" },
  bpf_map__set_initial_value: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  bpf_map__reuse_fd: { parameters: ["pointer", "i32"], result: "i32" },
  bpf_map_update_elem: { parameters: ["i32", "buffer", "buffer", "u64"], result: "i32" },
  bpf_map_lookup_elem: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_map_delete_elem: { parameters: ["i32", "buffer"], result: "i32" },
  bpf_map_get_next_key: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_tc_hook_create: { parameters: ["buffer"], result: "i32" },
  bpf_tc_hook_destroy: { parameters: ["buffer"], result: "i32" },
  bpf_tc_attach: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_tc_detach: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_tc_query: { parameters: ["buffer", "buffer"], result: "i32" },
  bpf_link_create: { parameters: ["i32", "i32", "u32", "buffer"], result: "i32" },
  bpf_link_detach: { parameters: ["i32"], result: "i32" },
  bpf_prog_query: { parameters: ["i32", "u32", "u32", "buffer", "buffer", "buffer"], result: "i32" },
  bpf_link_get_next_id: { parameters: ["u32", "buffer"], result: "i32" },
  bpf_link_get_fd_by_id: { parameters: ["u32"], result: "i32" },
  bpf_prog_get_fd_by_id: { parameters: ["u32"], result: "i32" },
  bpf_map_get_fd_by_id: { parameters: ["u32"], result: "i32" },
  bpf_obj_get_info_by_fd: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_prog_test_run_opts: { parameters: ["i32", "buffer"], result: "i32" },
  bpf_prog_load: { parameters: ["u32", "buffer", "buffer", "buffer", "usize", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

const log = logger("bpf");

const PRINT_DEF = { parameters: ["i32", "pointer", "pointer"], result: "i32" } as const;
// Warnings printed during the current call, attached to the error if the call fails.
let captured: string[] | undefined;

const LIBBPF_WARN = 0;
const LIBBPF_INFO = 1;

function onLibbpfPrint(level: number, fmt: Deno.PointerValue, ap: Deno.PointerValue): number {
  const text = formatVaList(fmt, ap).replace(/\n+$/, "");
  if (text.length === 0) return 0;
  if (level === LIBBPF_WARN && captured) {
    // Held back until the call returns: the caller knows whether this warning matters.
    captured.push(text);
  } else if (level === LIBBPF_WARN) {
    log.warn(text);
  } else if (level === LIBBPF_INFO) {
    log.info(text);
  } else {
    log.debug(text);
  }
  return 0;
}

/** Logs warnings held back during a call: as warnings, or at debug when the outcome was expected or reported. */
function release(warnings: readonly string[], asWarning: boolean): void {
  for (const w of warnings) asWarning ? log.warn(w) : log.debug(w);
}

// Opened at import (a library first opened inside a test counts as a leak to Deno's sanitizers); a
// missing libbpf is reported by the first call instead, so that importing never fails.
const opened = openLibbpf();

function openLibbpf(): {
  lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  print: Deno.UnsafeCallback<typeof PRINT_DEF>;
} | {
  error: string;
} {
  try {
    const lib = Deno.dlopen("libbpf.so.1", SYMBOLS);
    // Kept for the life of the process: libbpf holds the pointer.
    const print = new Deno.UnsafeCallback(PRINT_DEF, onLibbpfPrint);
    lib.symbols.libbpf_set_print(print.pointer);
    return { lib, print };
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

function bpf(): Symbols {
  if ("error" in opened) {
    throw new Error(`cannot load libbpf.so.1 (install libbpf1, version 1.1 or later): ${opened.error}`);
  }
  return opened.lib.symbols;
}

/** libbpf's version, e.g. "1.1". */
export function libbpfVersion(): string {
  const s = bpf();
  return `${s.libbpf_major_version()}.${s.libbpf_minor_version()}`;
}

/** libbpf's text for a (negative or positive) error code. */
export function libbpfErrorText(err: number): string {
  const buf = new Uint8Array(256);
  bpf().libbpf_strerror(-Math.abs(err), buf, 256n);
  return textOfCString(buf);
}

/** The text of a NUL-terminated C string in `bytes` (all of them when there is no NUL). */
function textOfCString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(bytes.subarray(0, end < 0 ? bytes.length : end));
}

/** A libbpf call failed: which call, the errno, libbpf's text for it and the warnings it printed. */
export class LibbpfError extends Error {
  readonly errno: number;
  constructor(readonly fn: string, err: number, readonly libbpfLog: readonly string[] = [], context = "") {
    const errno = Math.abs(err);
    // The full text stays in libbpfLog; the message keeps its end (a verifier log ends with the reason).
    const said = libbpfLog.join(" | ").replace(/\s*\n\s*/g, " | ");
    const tail = said ? `; libbpf said: ${said.length > 1500 ? `...${said.slice(-1500)}` : said}` : "";
    super(`${fn}${context ? ` (${context})` : ""}: ${libbpfErrorText(errno)} (errno ${errno})${tail}`);
    this.name = "LibbpfError";
    this.errno = errno;
  }
}

/** Well-known errno values callers branch on. */
export const Errno = {
  ENOENT: 2,
  E2BIG: 7,
  EBADF: 9,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ENOMEM: 12,
  EOPNOTSUPP: 95,
} as const;

/** The symbolic name of an errno for labels and messages ("E2BIG"), or "errno N" when it is not one above. */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(Errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** Runs a libbpf call while collecting its warnings; returns the result and the warnings. */
function withCapture<T>(fn: () => T): { result: T; warnings: string[] } {
  const outer = captured;
  const mine: string[] = [];
  captured = mine;
  try {
    return { result: fn(), warnings: mine };
  } finally {
    captured = outer;
  }
}

/** Calls an int-returning libbpf function; a negative result becomes a LibbpfError carrying the warnings. */
function check(fn: string, call: () => number, context = ""): number {
  const { result, warnings } = withCapture(call);
  release(warnings, result >= 0);
  if (result < 0) throw new LibbpfError(fn, result, warnings, context);
  return result;
}

function u64ptr(buf: Uint8Array<ArrayBuffer> | null): bigint {
  return buf === null || buf.length === 0 ? 0n : BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/**
 * Sizes and field offsets of the C structs built or read here: x86-64, libbpf 1.1.2 and Linux 6.1 uapi
 * headers, checked against the headers by tests/unit/libbpf_layout_test.ts. Every `sz` is the full size.
 */
export const LAYOUT = {
  bpf_object_open_opts: { size: 80, sz: 0, object_name: 8 },
  bpf_tc_hook: { size: 24, sz: 0, ifindex: 8, attach_point: 12, parent: 16 },
  bpf_tc_opts: { size: 32, sz: 0, prog_fd: 8, flags: 12, prog_id: 16, handle: 20, priority: 24 },
  bpf_link_create_opts: { size: 64, sz: 0, flags: 8 },
  bpf_test_run_opts: {
    size: 80,
    sz: 0,
    data_in: 8,
    data_out: 16,
    data_size_in: 24,
    data_size_out: 28,
    ctx_in: 32,
    ctx_out: 40,
    ctx_size_in: 48,
    ctx_size_out: 52,
    retval: 56,
    repeat: 60,
    duration: 64,
  },
  bpf_prog_info: { size: 232, type: 0, id: 4, nr_map_ids: 52, map_ids: 56, name: 64 },
  bpf_map_info: { size: 88, type: 0, id: 4, key_size: 8, value_size: 12, max_entries: 16, name: 24 },
  /** The tcx member of the union (kernel 6.6+) is read at the union's offset: ifindex, then attach_type. */
  bpf_link_info: { size: 48, type: 0, id: 4, prog_id: 8, union: 16 },
  __sk_buff: { size: 192, mark: 8, ifindex: 40 },
} as const;

// ---------------------------------------------------------------------------------------------------
// Objects, programs and maps

/** BPF program types this project loads (uapi enum bpf_prog_type). */
export const BPF_PROG_TYPE_SCHED_CLS = 3;

/** A map of an opened object; its fd exists once the object is loaded. */
export class BpfMap {
  constructor(private readonly handle: Deno.PointerObject, readonly name: string) {}

  get keySize(): number {
    return bpf().bpf_map__key_size(this.handle);
  }

  get valueSize(): number {
    return bpf().bpf_map__value_size(this.handle);
  }

  get maxEntries(): number {
    return bpf().bpf_map__max_entries(this.handle);
  }

  /** The map's fd after load; throws before. */
  get fd(): number {
    const fd = bpf().bpf_map__fd(this.handle);
    if (fd < 0) throw new LibbpfError("bpf_map__fd", fd, [], `map ${this.name} is not loaded`);
    return fd;
  }

  /** Before load: how many entries the kernel map will hold. */
  setMaxEntries(n: number): void {
    check("bpf_map__set_max_entries", () => bpf().bpf_map__set_max_entries(this.handle, n), this.name);
  }

  /** Before load: the contents of a global-data map (.rodata.*), which must match its size exactly. */
  setInitialValue(bytes: Uint8Array<ArrayBuffer>): void {
    check(
      "bpf_map__set_initial_value",
      () => bpf().bpf_map__set_initial_value(this.handle, bytes, BigInt(bytes.length)),
      `${this.name}, ${bytes.length} bytes`,
    );
  }

  /** Before load: use an existing kernel map (of another loaded object) instead of creating one. */
  reuseFd(fd: number): void {
    check("bpf_map__reuse_fd", () => bpf().bpf_map__reuse_fd(this.handle, fd), this.name);
  }
}

/** A program of an opened object; its fd exists once the object is loaded. */
export class BpfProgram {
  constructor(private readonly handle: Deno.PointerObject, readonly name: string) {}

  get fd(): number {
    const fd = bpf().bpf_program__fd(this.handle);
    if (fd < 0) throw new LibbpfError("bpf_program__fd", fd, [], `program ${this.name} is not loaded`);
    return fd;
  }
}

/** A BPF ELF object opened from bytes; `load()` creates its maps and programs in the kernel. */
export class BpfObject implements Disposable {
  #handle: Deno.PointerObject | null;

  private constructor(handle: Deno.PointerObject, readonly name: string) {
    this.#handle = handle;
  }

  /** Parses an object from memory (the bytes are only needed during the call). */
  static openMem(bytes: Uint8Array, name: string): BpfObject {
    const L = LAYOUT.bpf_object_open_opts;
    const nameBuf = cString(name);
    const opts = new Uint8Array(L.size);
    const dv = new DataView(opts.buffer);
    dv.setBigUint64(L.sz, BigInt(L.size), true);
    dv.setBigUint64(L.object_name, u64ptr(nameBuf), true);
    const data = new Uint8Array(bytes.length);
    data.set(bytes);
    const { result, warnings } = withCapture(() => {
      const handle = bpf().bpf_object__open_mem(data, BigInt(data.length), opts);
      return { handle, errno: handle === null ? lastErrno() : 0 };
    });
    release(warnings, result.handle !== null);
    if (result.handle === null) {
      throw new LibbpfError("bpf_object__open_mem", result.errno || Errno.EINVAL, warnings, name);
    }
    return new BpfObject(result.handle, name);
  }

  #live(): Deno.PointerObject {
    if (this.#handle === null) throw new Error(`BPF object ${this.name} is closed`);
    return this.#handle;
  }

  /** The named map, or undefined when the object has none. */
  findMap(name: string): BpfMap | undefined {
    const h = this.#live();
    const { result, warnings } = withCapture(() => bpf().bpf_object__find_map_by_name(h, cString(name)));
    release(warnings, false);
    return result === null ? undefined : new BpfMap(result, name);
  }

  /** The named program, or undefined when the object has none. */
  findProgram(name: string): BpfProgram | undefined {
    const h = this.#live();
    const { result, warnings } = withCapture(() => bpf().bpf_object__find_program_by_name(h, cString(name)));
    release(warnings, false);
    return result === null ? undefined : new BpfProgram(result, name);
  }

  /** Creates the maps and loads (verifies) the programs. */
  load(): void {
    const h = this.#live();
    check("bpf_object__load", () => bpf().bpf_object__load(h), this.name);
  }

  /** Unloads: closes every map and program fd this object holds (attached links keep their program). */
  close(): void {
    if (this.#handle === null) return;
    const h = this.#handle;
    this.#handle = null;
    release(withCapture(() => bpf().bpf_object__close(h)).warnings, true);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// Map element access by fd

/** BPF_ANY: create or update. */
export const BPF_ANY = 0n;
/** BPF_NOEXIST: create only. */
export const BPF_NOEXIST = 1n;
/** BPF_EXIST: update only. */
export const BPF_EXIST = 2n;

/** Inserts or updates one element. */
export function mapUpdate(
  fd: number,
  key: Uint8Array<ArrayBuffer>,
  value: Uint8Array<ArrayBuffer>,
  flags = BPF_ANY,
) {
  // A thin syscall wrapper that never prints: no warning capture on this hot path.
  const rc = bpf().bpf_map_update_elem(fd, key, value, flags);
  if (rc < 0) throw new LibbpfError("bpf_map_update_elem", rc);
}

/** Reads one element into a new array of valueSize bytes; undefined when absent. */
export function mapLookup(
  fd: number,
  key: Uint8Array<ArrayBuffer>,
  valueSize: number,
): Uint8Array | undefined {
  const value = new Uint8Array(valueSize);
  const rc = bpf().bpf_map_lookup_elem(fd, key, value);
  if (rc === -Errno.ENOENT) return undefined;
  if (rc < 0) throw new LibbpfError("bpf_map_lookup_elem", rc);
  return value;
}

/** Reads one element into `value` (its whole length; per-CPU maps: one value per possible CPU); false when absent. */
export function mapLookupInto(
  fd: number,
  key: Uint8Array<ArrayBuffer>,
  value: Uint8Array<ArrayBuffer>,
): boolean {
  const rc = bpf().bpf_map_lookup_elem(fd, key, value);
  if (rc === -Errno.ENOENT) return false;
  if (rc < 0) throw new LibbpfError("bpf_map_lookup_elem", rc);
  return true;
}

/** Deletes one element; false when it was not there. */
export function mapDelete(fd: number, key: Uint8Array<ArrayBuffer>): boolean {
  const rc = bpf().bpf_map_delete_elem(fd, key);
  if (rc === -Errno.ENOENT) return false;
  if (rc < 0) throw new LibbpfError("bpf_map_delete_elem", rc);
  return true;
}

let possibleCpuCount: number | undefined;

/**
 * CPUs a per-CPU map has a value for (the kernel's possible CPUs, not only the online ones): a lookup
 * in such a map fills this many values, each rounded up to 8 bytes.
 */
export function possibleCpus(): number {
  if (possibleCpuCount === undefined) {
    const n = bpf().libbpf_num_possible_cpus();
    if (n < 0) throw new LibbpfError("libbpf_num_possible_cpus", n);
    possibleCpuCount = n;
  }
  return possibleCpuCount;
}

/** Every key of a hash map (a snapshot; concurrent changes may be missed or seen). */
export function mapKeys(fd: number, keySize: number): Uint8Array[] {
  const keys: Uint8Array[] = [];
  let prev: Uint8Array<ArrayBuffer> | null = null;
  for (;;) {
    const next = new Uint8Array(keySize);
    const rc = bpf().bpf_map_get_next_key(fd, prev, next);
    if (rc === -Errno.ENOENT) return keys;
    if (rc < 0) throw new LibbpfError("bpf_map_get_next_key", rc);
    keys.push(next);
    prev = next;
  }
}

// ---------------------------------------------------------------------------------------------------
// tc (clsact) hooks and filters

/** Where a tc hook sits (libbpf enum bpf_tc_attach_point). */
export const TcAttachPoint = { ingress: 1, egress: 2 } as const;
/** bpf_tc_opts.flags: replace an existing filter at the same handle and priority. */
export const BPF_TC_F_REPLACE = 1;

function tcHook(ifindex: number, attachPoint: number): Uint8Array<ArrayBuffer> {
  const L = LAYOUT.bpf_tc_hook;
  const hook = new Uint8Array(L.size);
  const dv = new DataView(hook.buffer);
  dv.setBigUint64(L.sz, BigInt(L.size), true);
  dv.setInt32(L.ifindex, ifindex, true);
  dv.setUint32(L.attach_point, attachPoint, true);
  return hook;
}

function tcOpts(
  o: { progFd?: number; flags?: number; handle: number; priority: number },
): Uint8Array<ArrayBuffer> {
  const L = LAYOUT.bpf_tc_opts;
  const opts = new Uint8Array(L.size);
  const dv = new DataView(opts.buffer);
  dv.setBigUint64(L.sz, BigInt(L.size), true);
  dv.setInt32(L.prog_fd, o.progFd ?? 0, true);
  dv.setUint32(L.flags, o.flags ?? 0, true);
  dv.setUint32(L.handle, o.handle, true);
  dv.setUint32(L.priority, o.priority, true);
  return opts;
}

/**
 * Creates the clsact qdisc for the hook's interface: "created" when this call made it, "existed" when
 * one was already there (libbpf reports EEXIST, which is not a failure here).
 */
export function tcHookCreate(ifindex: number, attachPoint: number): "created" | "existed" {
  const hook = tcHook(ifindex, attachPoint);
  const { result, warnings } = withCapture(() => bpf().bpf_tc_hook_create(hook));
  release(warnings, result >= 0);
  if (result === -Errno.EEXIST) return "existed";
  if (result < 0) throw new LibbpfError("bpf_tc_hook_create", result, warnings, `ifindex ${ifindex}`);
  return "created";
}

/**
 * Destroys a hook. With one attach point libbpf flushes that side's filters (all of them, not just
 * ours) and keeps the qdisc; with ingress|egress it deletes the whole clsact qdisc.
 */
export function tcHookDestroy(ifindex: number, attachPoint: number): void {
  const hook = tcHook(ifindex, attachPoint);
  check("bpf_tc_hook_destroy", () => bpf().bpf_tc_hook_destroy(hook), `ifindex ${ifindex}`);
}

/** Attaches a direct-action bpf filter at (handle, priority); returns the kernel's program id. */
export function tcAttach(
  ifindex: number,
  attachPoint: number,
  o: { progFd: number; handle: number; priority: number; replace: boolean },
): { progId: number } {
  const hook = tcHook(ifindex, attachPoint);
  const opts = tcOpts({ ...o, flags: o.replace ? BPF_TC_F_REPLACE : 0 });
  check("bpf_tc_attach", () => bpf().bpf_tc_attach(hook, opts), `ifindex ${ifindex}`);
  return { progId: new DataView(opts.buffer).getUint32(LAYOUT.bpf_tc_opts.prog_id, true) };
}

/** The program id of the bpf filter at (handle, priority), or undefined when there is none. */
export function tcQuery(
  ifindex: number,
  attachPoint: number,
  o: { handle: number; priority: number },
): { progId: number } | undefined {
  const hook = tcHook(ifindex, attachPoint);
  const opts = tcOpts(o);
  const { result, warnings } = withCapture(() => bpf().bpf_tc_query(hook, opts));
  release(warnings, result >= 0);
  // ENOENT: no filter there; EINVAL: the interface has no clsact qdisc at all.
  if (result === -Errno.ENOENT || result === -Errno.EINVAL) return undefined;
  if (result < 0) throw new LibbpfError("bpf_tc_query", result, warnings, `ifindex ${ifindex}`);
  return { progId: new DataView(opts.buffer).getUint32(LAYOUT.bpf_tc_opts.prog_id, true) };
}

/** Removes exactly the bpf filter at (handle, priority). */
export function tcDetach(
  ifindex: number,
  attachPoint: number,
  o: { handle: number; priority: number },
): void {
  const hook = tcHook(ifindex, attachPoint);
  const opts = tcOpts(o);
  check("bpf_tc_detach", () => bpf().bpf_tc_detach(hook, opts), `ifindex ${ifindex}`);
}

// ---------------------------------------------------------------------------------------------------
// Links (TCX) and introspection

/** uapi enum bpf_attach_type values for TCX (kernel 6.6+; absent from libbpf 1.1's headers). */
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
/** bpf_mprog flag: put the program before the others (with no relative program: first). */
export const BPF_F_BEFORE = 1 << 3;
/** uapi enum bpf_link_type value of TCX links. */
export const BPF_LINK_TYPE_TCX = 11;

/** Creates a link (for TCX: target = ifindex); returns the link fd, which detaches it when closed. */
export function linkCreate(progFd: number, target: number, attachType: number, flags = 0): number {
  const L = LAYOUT.bpf_link_create_opts;
  const opts = new Uint8Array(L.size);
  const dv = new DataView(opts.buffer);
  dv.setBigUint64(L.sz, BigInt(L.size), true);
  dv.setUint32(L.flags, flags, true);
  return check(
    "bpf_link_create",
    () => bpf().bpf_link_create(progFd, target, attachType, opts),
    `attach type ${attachType}, target ${target}`,
  );
}

/** Detaches a link through its fd, whoever else holds it (the fd stays open until closed). */
export function linkDetach(linkFd: number): void {
  check("bpf_link_detach", () => bpf().bpf_link_detach(linkFd));
}

/**
 * Ids of the programs attached to an interface's TCX hook, in run order. The ifindex is resolved in the
 * caller's network namespace, so this tells links on this namespace's interface from same-numbered ones
 * elsewhere. Empty on kernels without TCX.
 */
export function tcxProgramIds(ifindex: number, attachType: number): number[] {
  for (let room = 16;; room *= 4) {
    const ids = new Uint32Array(room);
    const count = new Uint32Array([room]);
    const rc = bpf().bpf_prog_query(
      ifindex,
      attachType,
      0,
      null,
      new Uint8Array(ids.buffer),
      new Uint8Array(count.buffer),
    );
    if (rc === -Errno.EINVAL) return [];
    if (rc === -Errno.ENOSPC && room < 4096) continue;
    if (rc < 0) {
      throw new LibbpfError("bpf_prog_query", rc, [], `ifindex ${ifindex}, attach type ${attachType}`);
    }
    return Array.from(ids.subarray(0, count[0]!));
  }
}

/** Ids of every BPF link in the system. */
export function linkIds(): number[] {
  const ids: number[] = [];
  const next = new Uint32Array(1);
  let id = 0;
  for (;;) {
    const rc = bpf().bpf_link_get_next_id(id, new Uint8Array(next.buffer));
    if (rc === -Errno.ENOENT) return ids;
    if (rc < 0) throw new LibbpfError("bpf_link_get_next_id", rc);
    id = next[0]!;
    ids.push(id);
  }
}

/** An fd for the link with this id (close it with closeFd), or undefined when it is gone. */
export function linkFdById(id: number): number | undefined {
  const fd = bpf().bpf_link_get_fd_by_id(id);
  if (fd === -Errno.ENOENT) return undefined;
  if (fd < 0) throw new LibbpfError("bpf_link_get_fd_by_id", fd, [], `link ${id}`);
  return fd;
}

/** An fd for the program with this id (close it with closeFd), or undefined when it is gone. */
export function progFdById(id: number): number | undefined {
  const fd = bpf().bpf_prog_get_fd_by_id(id);
  if (fd === -Errno.ENOENT) return undefined;
  if (fd < 0) throw new LibbpfError("bpf_prog_get_fd_by_id", fd, [], `program ${id}`);
  return fd;
}

/** bpf_obj_get_info_by_fd into `info` (zeroed, or with the fields that ask for more already set). */
function objInfo(fd: number, info: Uint8Array<ArrayBuffer>): DataView {
  const len = new Uint32Array([info.length]);
  check("bpf_obj_get_info_by_fd", () => bpf().bpf_obj_get_info_by_fd(fd, info, new Uint8Array(len.buffer)));
  return new DataView(info.buffer);
}

/** What the kernel says about a loaded program. */
export interface ProgInfo {
  type: number;
  id: number;
  /** Up to 15 characters of the program's name. */
  name: string;
}

/** Kernel information about the program behind an fd. */
export function progInfo(fd: number): ProgInfo {
  const L = LAYOUT.bpf_prog_info;
  const dv = objInfo(fd, new Uint8Array(L.size));
  return {
    type: dv.getUint32(L.type, true),
    id: dv.getUint32(L.id, true),
    name: textOfCString(new Uint8Array(dv.buffer, L.name, 16)),
  };
}

/** The ids of the maps a loaded program uses. */
export function progMapIds(fd: number): number[] {
  const L = LAYOUT.bpf_prog_info;
  const count = objInfo(fd, new Uint8Array(L.size)).getUint32(L.nr_map_ids, true);
  if (count === 0) return [];
  const ids = new Uint32Array(count);
  const info = new Uint8Array(L.size);
  const ask = new DataView(info.buffer);
  ask.setUint32(L.nr_map_ids, count, true);
  ask.setBigUint64(L.map_ids, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(ids))), true);
  const dv = objInfo(fd, info);
  // The kernel says how many there are now; it filled at most what we gave room for.
  return [...ids.subarray(0, Math.min(count, dv.getUint32(L.nr_map_ids, true)))];
}

/** A map by its kernel id: an fd (the caller closes it), or undefined when it is gone. */
export function mapFdById(id: number): number | undefined {
  const fd = bpf().bpf_map_get_fd_by_id(id);
  if (fd === -Errno.ENOENT) return undefined;
  if (fd < 0) throw new LibbpfError("bpf_map_get_fd_by_id", fd, [], `map ${id}`);
  return fd;
}

/** What the kernel says about a map. */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** Up to 15 characters of the map's name. */
  name: string;
}

/** Kernel information about the map behind an fd. */
export function mapInfo(fd: number): MapInfo {
  const L = LAYOUT.bpf_map_info;
  const dv = objInfo(fd, new Uint8Array(L.size));
  return {
    type: dv.getUint32(L.type, true),
    id: dv.getUint32(L.id, true),
    keySize: dv.getUint32(L.key_size, true),
    valueSize: dv.getUint32(L.value_size, true),
    maxEntries: dv.getUint32(L.max_entries, true),
    name: textOfCString(new Uint8Array(dv.buffer, L.name, 16)),
  };
}

/** Kernel information about a link; the tcx fields are meaningful for BPF_LINK_TYPE_TCX. */
export interface LinkInfo {
  type: number;
  id: number;
  progId: number;
  /** TCX: the interface (0 once the device is gone). */
  tcxIfindex: number;
  /** TCX: BPF_TCX_INGRESS or BPF_TCX_EGRESS. */
  tcxAttachType: number;
}

/** Kernel information about the link behind an fd. */
export function linkInfo(fd: number): LinkInfo {
  const L = LAYOUT.bpf_link_info;
  // Room beyond the 6.1 size for newer kernels' union members (the kernel wants the extra bytes zero).
  const dv = objInfo(fd, new Uint8Array(64));
  return {
    type: dv.getUint32(L.type, true),
    id: dv.getUint32(L.id, true),
    progId: dv.getUint32(L.prog_id, true),
    tcxIfindex: dv.getUint32(L.union, true),
    tcxAttachType: dv.getUint32(L.union + 4, true),
  };
}

/** The name of the program with this id, or undefined when it is gone. */
export function progNameById(id: number): string | undefined {
  const fd = progFdById(id);
  if (fd === undefined) return undefined;
  try {
    return progInfo(fd).name;
  } finally {
    closeFd(fd);
  }
}

// ---------------------------------------------------------------------------------------------------
// BPF_PROG_TEST_RUN

/** A struct __sk_buff test-run context; only the fields the kernel accepts as input can be set. */
export function skBuffContext(o: { ifindex?: number; mark?: number }): Uint8Array<ArrayBuffer> {
  const L = LAYOUT.__sk_buff;
  const ctx = new Uint8Array(L.size);
  const dv = new DataView(ctx.buffer);
  dv.setUint32(L.mark, o.mark ?? 0, true);
  dv.setUint32(L.ifindex, o.ifindex ?? 0, true);
  return ctx;
}

/** Outcome of a test run. */
export interface TestRunResult {
  /** The program's return value (as unsigned 32-bit, so -1 reads 0xFFFFFFFF). */
  retval: number;
  /** The packet after the last run. */
  data: Uint8Array;
  /** The context after the last run, when one was passed in. */
  ctx?: Uint8Array;
  /** Average run time in nanoseconds as the kernel measured it. */
  durationNs: number;
}

/** Runs a program on a packet in the kernel without attaching it (BPF_PROG_TEST_RUN). */
export function progTestRun(
  progFd: number,
  o: { data: Uint8Array; repeat?: number; ctx?: Uint8Array<ArrayBuffer>; dataOutSize?: number },
): TestRunResult {
  const dataIn = new Uint8Array(o.data.length);
  dataIn.set(o.data);
  const dataOut = new Uint8Array(o.dataOutSize ?? dataIn.length + 256);
  const L = LAYOUT.bpf_test_run_opts;
  const opts = new Uint8Array(L.size);
  const dv = new DataView(opts.buffer);
  dv.setBigUint64(L.sz, BigInt(L.size), true);
  dv.setBigUint64(L.data_in, u64ptr(dataIn), true);
  dv.setBigUint64(L.data_out, u64ptr(dataOut), true);
  dv.setUint32(L.data_size_in, dataIn.length, true);
  dv.setUint32(L.data_size_out, dataOut.length, true);
  const ctx = o.ctx ?? null;
  const ctxOut = ctx ? new Uint8Array(ctx.length) : null;
  if (ctx && ctxOut) {
    dv.setBigUint64(L.ctx_in, u64ptr(ctx), true);
    dv.setBigUint64(L.ctx_out, u64ptr(ctxOut), true);
    dv.setUint32(L.ctx_size_in, ctx.length, true);
    dv.setUint32(L.ctx_size_out, ctxOut.length, true);
  }
  dv.setInt32(L.repeat, o.repeat ?? 1, true);
  check("bpf_prog_test_run_opts", () => bpf().bpf_prog_test_run_opts(progFd, opts));
  // Keep the buffers alive until here: the kernel read and wrote them through raw addresses.
  void dataIn.length, void ctx?.length;
  return {
    retval: dv.getUint32(L.retval, true),
    data: dataOut.slice(0, dv.getUint32(L.data_size_out, true)),
    ctx: ctxOut ? ctxOut.slice(0, dv.getUint32(L.ctx_size_out, true)) : undefined,
    durationNs: dv.getUint32(L.duration, true),
  };
}

/** A program of two instructions, `r0 = value; exit`, as raw bytecode (struct bpf_insn, 8 bytes each). */
export function returnImmediateProgram(value: number): Uint8Array<ArrayBuffer> {
  const insns = new Uint8Array(16);
  const dv = new DataView(insns.buffer);
  insns[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
  dv.setInt32(4, value, true);
  insns[8] = 0x95; // BPF_JMP | BPF_EXIT
  return insns;
}

/** Loads raw bytecode as a program (no object file); returns its fd, to be closed with closeFd. */
export function loadRawProgram(type: number, name: string, insns: Uint8Array<ArrayBuffer>): number {
  return check(
    "bpf_prog_load",
    () => bpf().bpf_prog_load(type, cString(name), cString("GPL"), insns, BigInt(insns.length / 8), null),
    name,
  );
}

// ---------------------------------------------------------------------------------------------------
// Ring buffers and cgroup attachment (sock_ops programs: the skops enricher and the iperf3 watcher)

// A second handle on the same library, so these symbols stay apart from the ones above; libbpf's state
// (the print callback included) is shared, since the process loads the library only once.
const RING_SYMBOLS = {
  ring_buffer__new: { parameters: ["i32", "function", "pointer", "pointer"], result: "pointer" },
  // Synchronous: the sample callback runs inside this call, on the JS thread.
  ring_buffer__consume: { parameters: ["pointer"], result: "i32" },
  ring_buffer__epoll_fd: { parameters: ["pointer"], result: "i32" },
  ring_buffer__free: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

const ringLib = (() => {
  try {
    return Deno.dlopen("libbpf.so.1", RING_SYMBOLS);
  } catch {
    return undefined; // reported by bpf() on first use
  }
})();

function ringSymbols(): Deno.DynamicLibrary<typeof RING_SYMBOLS>["symbols"] {
  if (ringLib === undefined) bpf(); // throws the "cannot load libbpf" error
  return ringLib!.symbols;
}

/** uapi enum bpf_attach_type: cgroup sock_ops programs. */
export const BPF_CGROUP_SOCK_OPS = 3;

const SAMPLE_DEF = { parameters: ["pointer", "pointer", "usize"], result: "i32" } as const;

/**
 * A libbpf ring buffer on a BPF_MAP_TYPE_RINGBUF map. `consume()` hands every pending record to the
 * handler, synchronously and on the JS thread, as a copy out of the ring (the kernel reuses the ring's
 * memory right after) in a buffer that is reused: the bytes are valid only during the handler's call, so
 * it must copy what it keeps. Wait for records with a poll on `epollFd` off the main thread, then consume.
 */
export class RingBuffer implements Disposable {
  #handle: Deno.PointerObject | null;
  readonly #callback: Deno.UnsafeCallback<typeof SAMPLE_DEF>;
  readonly #epollFd: number;
  readonly #state: RingState;

  private constructor(
    handle: Deno.PointerObject,
    callback: Deno.UnsafeCallback<typeof SAMPLE_DEF>,
    state: RingState,
  ) {
    this.#handle = handle;
    this.#callback = callback;
    this.#state = state;
    this.#epollFd = ringSymbols().ring_buffer__epoll_fd(handle);
  }

  /** Opens a ring buffer on a loaded map's fd; `onRecord` gets each record's bytes (valid during the call). */
  static open(mapFd: number, onRecord: (record: Uint8Array) => void): RingBuffer {
    const state: RingState = { handled: 0, budget: Infinity };
    // One buffer reused for every record: allocating an ArrayBuffer per record costs more than the copy.
    let scratch = new Uint8Array(512);
    const callback = new Deno.UnsafeCallback(SAMPLE_DEF, (_ctx, data, size) => {
      if (data === null) return 0;
      const n = Number(size);
      if (n > scratch.length) scratch = new Uint8Array(Math.max(n, 2 * scratch.length));
      const bytes = scratch.subarray(0, n);
      Deno.UnsafePointerView.copyInto(data, bytes);
      try {
        onRecord(bytes);
      } catch (err) {
        // Stop this consume() and let it report the handler's failure, rather than unwind through C.
        state.error = err;
        return -1;
      }
      // libbpf counts this record as consumed and returns our code, so the rest waits for the next call.
      return ++state.handled >= state.budget ? BUDGET_SPENT : 0;
    });
    const { result, warnings } = withCapture(() => {
      const handle = ringSymbols().ring_buffer__new(mapFd, callback.pointer, null, null);
      return { handle, errno: handle === null ? lastErrno() : 0 };
    });
    if (result.handle === null) {
      callback.close();
      throw new LibbpfError("ring_buffer__new", result.errno || Errno.EINVAL, warnings, `map fd ${mapFd}`);
    }
    return new RingBuffer(result.handle, callback, state);
  }

  /** An epoll fd that polls readable when records are waiting. */
  get epollFd(): number {
    return this.#epollFd;
  }

  /**
   * Hands waiting records to the handler, at most `budget` of them (so a flood cannot hold the event loop
   * for long); returns how many were handled. A handler's exception stops the call and is rethrown.
   */
  consume(budget = Infinity): number {
    if (this.#handle === null) throw new Error("ring buffer is closed");
    const h = this.#handle;
    const state = this.#state;
    state.handled = 0;
    state.budget = budget;
    state.error = undefined;
    const { result: rc, warnings } = withCapture(() => ringSymbols().ring_buffer__consume(h));
    if (state.error !== undefined) throw state.error;
    if (rc < 0 && rc !== BUDGET_SPENT) throw new LibbpfError("ring_buffer__consume", rc, warnings);
    return state.handled;
  }

  /** Frees the ring buffer (unmapping the ring) and the callback; safe to call twice. */
  close(): void {
    if (this.#handle === null) return;
    const h = this.#handle;
    this.#handle = null;
    ringSymbols().ring_buffer__free(h);
    this.#callback.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Shared by a ring's callback and its consume(): records handled in this call and the limit. */
interface RingState {
  handled: number;
  budget: number;
  error?: unknown;
}

/** What the callback returns to stop a consume() whose budget is spent (no errno has this value). */
const BUDGET_SPENT = -100_000;
