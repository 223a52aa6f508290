/**
 * Fireflies as each known emitter writes them, composed from the format facts (header fields, JSON
 * spacing, key order, time formats), for the listener's unit and end-to-end tests.
 */

/** A golden datagram and the event fields it must give. */
export interface Golden {
  readonly name: string;
  readonly datagram: string;
  readonly expect: {
    state: "start" | "end" | "ongoing";
    protocol: "tcp" | "udp";
    family: "ipv4" | "ipv6";
    src: string;
    srcPort: number;
    dst: string;
    dstPort: number;
    experimentId: number;
    activityId: number;
    application: string;
    /** RFC 3339 start, or undefined when the sender gave none the listener trusts. */
    start: string | undefined;
    end: string | undefined;
  };
}

/** flowd (Python): isoformat() times with +00:00, json.dumps spacing, app `flowd`. */
export const FLOWD_PY_START: Golden = {
  name: "flowd (Python) start",
  datagram: "<134>1 2025-04-02T10:15:30.250000+00:00 dtn1.example.org flowd - firefly-json - " +
    '{"version": 1, "flow-lifecycle": {"state": "start", "current-time": "2025-04-02T10:15:30.250000+00:00", ' +
    '"start-time": "2025-04-02T10:15:30.100000+00:00"}, "flow-id": {"afi": "ipv6", "src-ip": "2001:db8:10::5", ' +
    '"dst-ip": "2001:db8:20::7", "protocol": "tcp", "src-port": 46282, "dst-port": 1094}, ' +
    '"context": {"experiment-id": 3, "activity-id": 2, "application": "flowd v1.1.7"}}',
  expect: {
    state: "start",
    protocol: "tcp",
    family: "ipv6",
    src: "2001:db8:10::5",
    srcPort: 46282,
    dst: "2001:db8:20::7",
    dstPort: 1094,
    experimentId: 3,
    activityId: 2,
    application: "flowd v1.1.7",
    start: "2025-04-02T10:15:30.100000Z",
    end: undefined,
  },
};

/** flowd-go 2.4.2 start: empty header timestamp (two spaces), local offset, trimmed fraction. */
export const FLOWD_GO_START: Golden = {
  name: "flowd-go 2.4.2 start",
  datagram: "<134>1  se1.example.org flowd-go-2.4.2 - firefly-json - " +
    '{"version":1,"flow-lifecycle":{"state":"start","start-time":"2025-04-02T12:15:30.5+02:00"},' +
    '"flow-id":{"afi":"ipv4","src-ip":"192.0.2.10","dst-ip":"198.51.100.20","protocol":"udp","src-port":5001,' +
    '"dst-port":5201},"context":{"experiment-id":2,"activity-id":19,"application":"flowd-go-2.4.2"}}',
  expect: {
    state: "start",
    protocol: "udp",
    family: "ipv4",
    src: "192.0.2.10",
    srcPort: 5001,
    dst: "198.51.100.20",
    dstPort: 5201,
    experimentId: 2,
    activityId: 19,
    application: "flowd-go-2.4.2",
    start: "2025-04-02T10:15:30.500000Z",
    end: undefined,
  },
};

/** flowd-go 2.4.2 end: `"start-time": ""` (its bug), UTC end-time; the start is unknown to the listener. */
export const FLOWD_GO_END: Golden = {
  name: "flowd-go 2.4.2 end (empty start-time)",
  datagram: "<134>1  se1.example.org flowd-go-2.4.2 - firefly-json - " +
    '{"version":1,"flow-lifecycle":{"state":"end","start-time":"","end-time":"2025-04-02T10:20:00.123+00:00"},' +
    '"flow-id":{"afi":"ipv4","src-ip":"192.0.2.10","dst-ip":"198.51.100.20","protocol":"udp","src-port":5001,' +
    '"dst-port":5201},"context":{"experiment-id":2,"activity-id":19,"application":"flowd-go-2.4.2"}}',
  expect: {
    state: "end",
    protocol: "udp",
    family: "ipv4",
    src: "192.0.2.10",
    srcPort: 5001,
    dst: "198.51.100.20",
    dstPort: 5201,
    experimentId: 2,
    activityId: 19,
    application: "flowd-go-2.4.2",
    start: undefined,
    end: "2025-04-02T10:20:00.123000Z",
  },
};

/** flowd-go with `prependSyslog: false`: the bare JSON. */
export const FLOWD_GO_BARE: Golden = {
  name: "flowd-go without syslog header",
  datagram:
    '{"version":1,"flow-lifecycle":{"state":"start","start-time":"2025-04-02T10:15:30.000001+00:00"},' +
    '"flow-id":{"afi":"ipv6","src-ip":"::1","dst-ip":"::1","protocol":"tcp","src-port":40000,"dst-port":5201},' +
    '"context":{"experiment-id":4,"activity-id":1,"application":"flowd-go-3.0.0"}}',
  expect: {
    state: "start",
    protocol: "tcp",
    family: "ipv6",
    src: "::1",
    srcPort: 40000,
    dst: "::1",
    dstPort: 5201,
    experimentId: 4,
    activityId: 1,
    application: "flowd-go-3.0.0",
    start: "2025-04-02T10:15:30.000001Z",
    end: undefined,
  },
};

/** XRootD: `-` timestamp, app `xrootd`, usage and netlink rtt, context before flow-id, a C string's NUL. */
export const XROOTD_END: Golden = {
  name: "XRootD end",
  datagram: "<134>1 - xrd1.example.org xrootd - firefly-json - " +
    '{"version":1,"flow-lifecycle":{"state":"end","current-time":"2025-04-02T10:20:00.654321+00:00",' +
    '"start-time":"2025-04-02T10:15:30.000001+00:00","end-time":"2025-04-02T10:20:00.654321+00:00"},' +
    '"usage":{"received":1024,"sent":987654321},"netlink":{"rtt":0.012},' +
    '"context":{"experiment-id":2,"activity-id":15,"application":"xrdcp"},' +
    '"flow-id":{"afi":"ipv6","src-ip":"2001:db8:30::1","dst-ip":"2001:db8:40::2","protocol":"tcp",' +
    '"src-port":1094,"dst-port":50123}}\0',
  expect: {
    state: "end",
    protocol: "tcp",
    family: "ipv6",
    src: "2001:db8:30::1",
    srcPort: 1094,
    dst: "2001:db8:40::2",
    dstPort: 50123,
    experimentId: 2,
    activityId: 15,
    application: "xrdcp",
    start: "2025-04-02T10:15:30.000001Z",
    end: "2025-04-02T10:20:00.654321Z",
  },
};

/** dCache: `Z` times, keys in any order, `usage`, an extra top-level object, app `dCache`. */
export const DCACHE_START: Golden = {
  name: "dCache start",
  datagram: "<134>1 2025-04-02T10:15:30.123Z pool7.example.org dCache - firefly-json - " +
    '{"flow-id":{"dst-port":33000,"afi":"ipv4","src-port":2880,"dst-ip":"203.0.113.50","protocol":"tcp",' +
    '"src-ip":"192.0.2.77"},"usage":{"received":0,"sent":0},"context":{"application":"http-tpc",' +
    '"activity-id":4,"experiment-id":3},"flow-lifecycle":{"current-time":"2025-04-02T10:15:30.123Z",' +
    '"start-time":"2025-04-02T10:15:30.1Z","state":"start"},"version":1,"storage-stats":{"read-bw":0}}',
  expect: {
    state: "start",
    protocol: "tcp",
    family: "ipv4",
    src: "192.0.2.77",
    srcPort: 2880,
    dst: "203.0.113.50",
    dstPort: 33000,
    experimentId: 3,
    activityId: 4,
    application: "http-tpc",
    start: "2025-04-02T10:15:30.100000Z",
    end: undefined,
  },
};

/** Every golden, in one list. */
export const GOLDENS: readonly Golden[] = [
  FLOWD_PY_START,
  FLOWD_GO_START,
  FLOWD_GO_END,
  FLOWD_GO_BARE,
  XROOTD_END,
  DCACHE_START,
];
