/**
 * Reading files named by the configuration or the command line (the configuration itself, a BPF object, a
 * cache, a token): regular files only and up to a size limit, so that a FIFO never blocks the daemon, a
 * device such as /dev/zero is never read forever, and a huge file is refused before it fills memory.
 */

/** Why a file was refused or could not be read; the message names the path and what to do. */
export class FileReadError extends Error {
  /** `missing`: there is no such file (callers with a fallback stay quiet about that). */
  constructor(message: string, readonly missing = false) {
    super(message);
    this.name = "FileReadError";
  }
}

/** What a path is, in words, for errors about files that are not regular. */
function kindOf(info: Deno.FileInfo): string {
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a named pipe (FIFO)";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isSocket) return "a socket";
  if (info.isSymlink) return "a symbolic link";
  return "not a regular file";
}

function describe(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "no such file";
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  return err instanceof Error ? err.message : String(err);
}

/** Human size, for limits in messages. */
function size(bytes: number): string {
  return bytes >= 1 << 20
    ? `${bytes / (1 << 20)} MiB`
    : bytes >= 1024
    ? `${bytes / 1024} KiB`
    : `${bytes} bytes`;
}

/**
 * The whole content of a regular file of at most `maxBytes` bytes. Throws `FileReadError` naming `what`
 * (e.g. "the configuration file") and the path for anything else. Synchronous: the file is local, regular
 * and bounded, and some readers (the configuration's registry cache) cannot await.
 */
export function readBoundedFileSync(path: string, maxBytes: number, what: string): Uint8Array {
  const refuse = (why: string, missing = false) =>
    new FileReadError(`cannot read ${what} ${path}: ${why}`, missing);
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (err) {
    throw refuse(describe(err), err instanceof Deno.errors.NotFound);
  }
  if (!info.isFile) throw refuse(`it is ${kindOf(info)}, expected a regular file`);
  if (info.size > maxBytes) {
    throw refuse(`it is ${info.size} bytes, more than the limit of ${size(maxBytes)}`);
  }
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (err) {
    throw refuse(describe(err));
  }
  try {
    // Checked again on what was opened: the path may have been replaced since the stat.
    const opened = file.statSync();
    if (!opened.isFile) throw refuse(`it is ${kindOf(opened)}, expected a regular file`);
    const buf = new Uint8Array(Math.min(maxBytes, Math.max(opened.size, 0)) + 1);
    let filled = 0;
    for (;;) {
      if (filled === buf.length) throw refuse(`it grew past the limit of ${size(maxBytes)} while being read`);
      const n = file.readSync(buf.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    return buf.slice(0, filled);
  } catch (err) {
    throw err instanceof FileReadError ? err : refuse(describe(err));
  } finally {
    file.close();
  }
}

/** The file as UTF-8 text (invalid sequences refused), with the same rules. */
export function readBoundedTextFileSync(path: string, maxBytes: number, what: string): string {
  const bytes = readBoundedFileSync(path, maxBytes, what);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new FileReadError(`cannot read ${what} ${path}: it is not UTF-8 text`);
  }
}
