/**
 * The yaml package, through one module: scripts/build.sh points this import at the package's ESM build
 * (Deno resolves its CommonJS `node` export, which the bundle would load through Node's module system).
 */
export { isMap, isScalar, isSeq, LineCounter, parseDocument, stringify } from "yaml";
export type { Node, Pair } from "yaml";
