import assert from "node:assert/strict";
import { encodeEnrichment } from "../../src/scitags/enrichment_json.ts";
import { flowInfoFixture, tcpInfoFixture } from "../helpers/flow_info_fixture.ts";

Deno.test("enrichment lean: the congestion algorithm and eleven tcp_info fields, keys sorted", () => {
  const text = JSON.stringify(encodeEnrichment(flowInfoFixture(), "lean"));
  assert.equal(
    text,
    '{"cong":{"algorithm":"cubic"},"tcpInfo":{"advMss":1428,"bytesSent":123500,' +
      '"deliveryRate":9007199254740993,"minRtt":120,"pMtu":1500,"retransmits":0,"rtt":250123,' +
      '"rttVar":60999,"sndCwnd":10,"sndMss":1428,"sndSsThresh":2147483647}}',
  );
});

Deno.test("enrichment full: all 56 fields in order, exact 64-bit values, the attributes under flowd-go's names", () => {
  const obj = encodeEnrichment(flowInfoFixture(), "full");
  const text = JSON.stringify(obj);
  assert.deepEqual(Object.keys(obj), ["tcpInfo", "cong", "skBuff", "bbr", "tos", "memInfo", "skMemInfo"]);
  const tcp = JSON.parse(text).tcpInfo;
  assert.equal(Object.keys(tcp).length, 57, "the 56 fields plus rcvWnd, which this kernel sends");
  assert.deepEqual(Object.keys(tcp).slice(0, 6), [
    "state",
    "caState",
    "retransmits",
    "probes",
    "backoff",
    "options",
  ]);
  assert.equal(Object.keys(tcp)[55], "sndWnd");
  assert.ok(text.includes('"maxPacingRate":18446744073709551615'), "u64 max written exactly");
  assert.ok(text.includes('"deliveryRate":9007199254740993'));
  assert.ok(text.includes('"WMemAlloc":0'), "flowd-go's capital W kept");
  assert.ok(
    text.includes(
      '"skBuff":{"family":10,"state":1,"timer":0,"retrans":0,"id":{"srcPort":2345,"dstPort":5777,' +
        '"srcIP":[3087860000,0,0,16777216],"dstIP":[3087860000,0,0,33554432],"ifId":0,"cookie":[1234,0]}',
    ),
    text,
  );
  assert.ok(text.includes('"bbr":{"bbrBW":5,"bbrMinRTT":6,"bbrPacingGain":7,"bbrCwndGain":8}'));
});

Deno.test("enrichment compatible: flowd's names, milliseconds truncated, ss's conventions", () => {
  const info = {
    tcpInfo: tcpInfoFixture({ rto: 3_000_000, sndSsThresh: 0xffff, options: 1 | 2 | 4 | 8 | 16, state: 7 }),
    cong: { algorithm: "bbr" },
  };
  const c = encodeEnrichment(info, "compatible");
  assert.equal(c.state, "unconnected");
  assert.equal(c.rto, 0, "the initial 3 s RTO reads 0");
  assert.equal(c.snd_ssthresh, 0, "an infinite ssthresh reads 0");
  assert.deepEqual(c.opts, ["ts", "sack", "ecn"]);
  assert.equal(c.rtt, 250, "250123 us is 250 ms");
  assert.equal(c.rttvar, 60);
  assert.equal(c.rcv_rtt, 1);
  assert.equal(c.ato, 40);
  assert.equal(c.cong, "bbr");
  assert.equal(Object.keys(c).length, 48);
  assert.equal(Object.keys(c)[0], "state");
  assert.ok(JSON.stringify(c).includes('"max_pacing_rate":18446744073709551615'));
  assert.equal(encodeEnrichment({ tcpInfo: tcpInfoFixture({ rto: 201_999 }) }, "compatible").rto, 201);
  assert.equal(encodeEnrichment({ tcpInfo: tcpInfoFixture({ state: 12 }) }, "compatible").state, "invalid");
});

Deno.test("enrichment: a sample without tcp_info encodes in every mode (the original's compatible mode crashed)", () => {
  assert.equal(JSON.stringify(encodeEnrichment({}, "lean")), '{"tcpInfo":null}');
  assert.equal(JSON.stringify(encodeEnrichment({}, "full")), '{"tcpInfo":null}');
  assert.equal(
    JSON.stringify(encodeEnrichment({ cong: { algorithm: "reno" } }, "compatible")),
    '{"cong":"reno"}',
  );
});
