/**
 * Adoption of a killed run's flows. A tc (clsact) filter outlives the process that attached it, and with
 * it its program and maps: the flows it marks go on being marked, and their counters counting. A new run
 * that finds such a leftover filter on one of its interfaces loads its program onto the leftover's
 * flowLabels and flowCounters maps (same sizes only), so marking never stops, the counts carry on, and the
 * flows the map holds are taken back into the marker's own table, to be listed and ended as usual.
 * (A TCX link goes with its process, program and maps with it: there is nothing to adopt.)
 */
import { closeFd } from "../../../ffi/libc_net.ts";
import { mapFdById, mapInfo, mapLookup, progFdById, progMapIds } from "../../../ffi/libbpf.ts";
import { errorMessage } from "../../core/errors.ts";
import type { FlowEvent } from "../../core/flow_event.ts";
import { logger } from "../../core/log.ts";
import { Rtnetlink } from "../../net/rtnetlink.ts";
import { decodeExtensionHeaderTag, decodeFlowLabel } from "../../scitags/flow_label.ts";
import type { FlowEntry } from "./program.ts";
import {
  CONFIG_SIZE,
  FLOW_COUNTERS_SIZE,
  FLOW_KEY_SIZE,
  FLOW_VALUE_SIZE,
  MARKING_STRATEGY_CODES,
  type MarkingStrategy,
} from "./layout.ts";
import { filterAtOurSlot, inNamespace } from "./our_hooks.ts";

const log = logger("backends", "marker");

/** The application of a flow taken back from an earlier run (its start event is gone with that run). */
export const ADOPTED_APPLICATION = "adopted from an earlier run";

/** The leftover maps to load onto; the caller closes both fds once loaded. */
export interface LeftoverMaps {
  readonly flowLabelsFd: number;
  readonly flowCountersFd: number;
  /** Where they were found, for the log. */
  readonly interface: string;
  readonly progId: number;
}

/**
 * Looks for a marker tc filter left on the interfaces (in order) whose maps this run can use: a flow map and
 * a counter array of the same layout and exactly `maxFlows` entries. Undefined when there is none (logged
 * when one was found but cannot be used).
 */
export async function findLeftoverMaps(
  interfaces: readonly string[],
  maxFlows: number,
  strategy: MarkingStrategy,
  netns?: string,
): Promise<LeftoverMaps | undefined> {
  if (interfaces.length === 0) return undefined;
  using rt = Rtnetlink.open({ netns });
  const links = await rt.links();
  for (const name of interfaces) {
    const link = links.find((l) => l.name === name);
    if (!link) continue;
    const leftover = inNamespace(netns, () => filterAtOurSlot(link.index));
    if (!leftover?.ours) continue;
    try {
      const found = mapsOf(leftover.progId, maxFlows, strategy);
      if (typeof found === "string") {
        log.info("a leftover marker filter was found, but its maps cannot be adopted: starting afresh", {
          interface: name,
          progId: leftover.progId,
          reason: found,
        });
        continue;
      }
      return { ...found, interface: name, progId: leftover.progId };
    } catch (err) {
      log.info("cannot inspect a leftover marker filter; starting afresh", {
        interface: name,
        err: errorMessage(err),
      });
    }
  }
  return undefined;
}

/** The program's two maps, or why they do not fit. */
function mapsOf(
  progId: number,
  maxFlows: number,
  strategy: MarkingStrategy,
): { flowLabelsFd: number; flowCountersFd: number } | string {
  const progFd = progFdById(progId);
  if (progFd === undefined) return "its program is gone";
  let ids: number[];
  try {
    ids = progMapIds(progFd);
  } finally {
    closeFd(progFd);
  }
  const open = new Map<string, number>();
  let sawConfig = false;
  try {
    for (const id of ids) {
      const fd = mapFdById(id);
      if (fd === undefined) continue;
      const info = mapInfo(fd);
      // Its tags mean what its strategy says: the configuration section (".rodata.config") tells which.
      if (info.name.includes(".rodata") && info.keySize === 4 && info.valueSize === CONFIG_SIZE) {
        const config = mapLookup(fd, new Uint8Array(4), CONFIG_SIZE);
        closeFd(fd);
        const code = config && new DataView(config.buffer, config.byteOffset).getUint32(0, true);
        if (code !== MARKING_STRATEGY_CODES[strategy]) {
          return `it marks with another strategy than ${strategy}`;
        }
        sawConfig = true;
        continue;
      }
      const fits = (info.name === "flowLabels" && info.keySize === FLOW_KEY_SIZE &&
        info.valueSize === FLOW_VALUE_SIZE) ||
        (info.name === "flowCounters" && info.keySize === 4 && info.valueSize === FLOW_COUNTERS_SIZE);
      if (!fits || open.has(info.name)) {
        closeFd(fd);
        continue;
      }
      if (info.maxEntries !== maxFlows) {
        closeFd(fd);
        return `its ${info.name} holds ${info.maxEntries} entries, this configuration ${maxFlows} (maxFlows changed)`;
      }
      open.set(info.name, fd);
    }
    if (!sawConfig) return "its marking strategy cannot be read";
    const flowLabelsFd = open.get("flowLabels"), flowCountersFd = open.get("flowCounters");
    if (flowLabelsFd === undefined || flowCountersFd === undefined) {
      return "it has no flow map with per-flow counters (an older marker)";
    }
    open.clear();
    return { flowLabelsFd, flowCountersFd };
  } finally {
    for (const fd of open.values()) closeFd(fd);
  }
}

/** Closes the leftover maps' fds (once loaded onto, the program holds them). */
export function releaseLeftoverMaps(m: LeftoverMaps): void {
  closeFd(m.flowLabelsFd);
  closeFd(m.flowCountersFd);
}

/** A start event for a flow found in the map: its 5-tuple, and the ids its tag carries. */
export function adoptedStart(entry: FlowEntry, strategy: MarkingStrategy): FlowEvent {
  const ids = strategy === "label" ? decodeFlowLabel(entry.tag) : decodeExtensionHeaderTag(entry.tag);
  return {
    state: "start",
    protocol: entry.flow.protocol,
    family: entry.flow.src.address.family,
    src: entry.flow.src,
    dst: entry.flow.dst,
    experimentId: ids.experimentId,
    activityId: ids.activityId,
    application: ADOPTED_APPLICATION,
  };
}
