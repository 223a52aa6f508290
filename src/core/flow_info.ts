/**
 * The TCP statistics of one flow at one moment, as the enrichers deliver them: tcp_info and the
 * attributes that come with it, under flowd-go's "full" enrichment names. The netlink enricher fills
 * everything the kernel sends; the skops enricher fills `tcpInfo` and `cong`.
 */
import type {
  BbrInfo,
  DctcpInfo,
  InetDiagSocket,
  MemInfo,
  SkMemInfo,
  TcpInfo,
  VegasInfo,
} from "../net/sock_diag.ts";

export type { TcpInfo } from "../net/sock_diag.ts";

/** One measurement of one flow; each part is absent when its source did not provide it. */
export interface FlowInfo {
  readonly tcpInfo?: TcpInfo;
  readonly cong?: { readonly algorithm: string };
  /** The socket as inet_diag describes it (netlink only). */
  readonly socket?: InetDiagSocket;
  readonly memInfo?: MemInfo;
  readonly skMemInfo?: SkMemInfo;
  readonly tos?: { readonly tos: number };
  readonly vegasInfo?: VegasInfo;
  readonly dctcpInfo?: DctcpInfo;
  readonly bbr?: BbrInfo;
}
