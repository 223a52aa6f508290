/**
 * The first, regex-based IP literal parser, kept as the reference the fast one in src/net/ip.ts is
 * checked against (tests/unit/ip_fast_parse_test.ts): same inputs accepted, same bytes.
 */
function parseIpv4Bytes(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const part of parts) {
    // Decimal only, no leading zeros (they would be octal to some parsers).
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseIpv6Bytes(text: string): number[] | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  let tail: number[] = [];
  let body = text;
  // An embedded IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  if (body.includes(".")) {
    const lastColon = body.lastIndexOf(":");
    const v4 = parseIpv4Bytes(body.slice(lastColon + 1));
    if (!v4 || lastColon < 1) return undefined;
    tail = v4;
    body = body.slice(0, lastColon + 1);
    if (!body.endsWith("::")) body = body.slice(0, -1);
  }
  const wantGroups = tail.length ? 6 : 8;
  const halves = body.split("::");
  if (halves.length > 2) return undefined;
  const parseGroups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const groups: number[] = [];
    for (const g of s.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      groups.push(parseInt(g, 16));
    }
    return groups;
  };
  const head = parseGroups(halves[0] ?? "");
  const rest = halves.length === 2 ? parseGroups(halves[1] ?? "") : [];
  if (!head || !rest) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = wantGroups - head.length - rest.length;
    if (missing < 1) return undefined; // "::" stands for at least one zero group
    groups = [...head, ...new Array<number>(missing).fill(0), ...rest];
  } else {
    if (head.length !== wantGroups) return undefined;
    groups = head;
  }
  const out: number[] = [];
  for (const g of groups) out.push(g >> 8, g & 0xff);
  return [...out, ...tail];
}

export function referenceParseIp(text: string): { bytes: number[]; zone?: string } | undefined {
  if (typeof text !== "string") return undefined;
  const v4 = parseIpv4Bytes(text);
  if (v4) return { bytes: v4 };
  let zone: string | undefined;
  let addr = text;
  const pct = text.indexOf("%");
  if (pct >= 0) {
    zone = text.slice(pct + 1);
    addr = text.slice(0, pct);
    if (!/^[A-Za-z0-9_.\-]{1,15}$/.test(zone)) return undefined;
  }
  const v6 = parseIpv6Bytes(addr);
  return v6 ? { bytes: v6, zone } : undefined;
}
