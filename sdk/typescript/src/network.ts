/**
 * A sandbox's network: its egress policy and its exposed ports (preview URLs). The wire shapes are
 * converted here once; {@link Sandbox} only sends them.
 */

/** An outbound network policy. `allowOut` wins over `denyOut`; `egress: "deny"` with `allowOut` is an allow-list. */
export interface NetworkPolicy {
  /** Default for destinations no rule names (the daemon's default when absent). */
  egress?: "allow" | "deny";
  /** CIDRs, addresses, domains (`pypi.org`) or wildcards (`*.github.com`). */
  allowOut?: string[];
  /** CIDRs, addresses or domains. */
  denyOut?: string[];
}

/** A policy as the daemon speaks it. */
export interface WireNetworkPolicy {
  egress?: "allow" | "deny";
  allow_out?: string[];
  deny_out?: string[];
}

/** An exposed port: its URL and, in the answer that created it, its port-scoped token. */
export interface ExposedPort {
  port: number;
  url: string;
  public: boolean;
  /** Send as `X-Sandpit-Token`, or use {@link ExposedPort.browserUrl}. */
  token: string | null;
  expiresAt: Date | null;
  /** The URL a browser can open as is (a private port's carries its token once; the daemon swaps it for a cookie). */
  browserUrl: string;
}

/** `ExposedPort` as the daemon sends it. */
export interface WireExposedPort {
  port: number;
  url: string;
  public: boolean;
  token?: string | null;
  expires_at?: string | null;
}

/** Options of `sandbox.exposePort(port, opts)`. */
export interface ExposePortOpts {
  /** Open to anyone with the URL (default false: the token is needed). */
  public?: boolean;
  /** Seconds the token stays valid (default: until the port is closed). */
  expiresIn?: number;
}

/** Accepts camelCase or the wire's snake_case. */
export function policyToWire(p: NetworkPolicy & WireNetworkPolicy): WireNetworkPolicy {
  const w: WireNetworkPolicy = {};
  if (p.egress !== undefined) w.egress = p.egress;
  const allow = p.allowOut ?? p.allow_out;
  const deny = p.denyOut ?? p.deny_out;
  if (allow !== undefined) w.allow_out = [...allow];
  if (deny !== undefined) w.deny_out = [...deny];
  return w;
}

export function policyFromWire(w: WireNetworkPolicy): NetworkPolicy {
  return { egress: w.egress, allowOut: w.allow_out ?? [], denyOut: w.deny_out ?? [] };
}

export function exposedPortFromWire(w: WireExposedPort): ExposedPort {
  const token = w.token ?? null;
  return {
    port: w.port,
    url: w.url,
    public: w.public,
    token,
    expiresAt: w.expires_at ? new Date(w.expires_at) : null,
    browserUrl: w.public || !token ? w.url : `${w.url}?sandpit_token=${token}`,
  };
}

/** `{port}-{id}.{previewDomain}`; without the daemon's word, `localhost` and the daemon URL's port. */
export function hostOf(id: string, port: number, previewDomain: string | null, daemonUrl: string): string {
  let domain = previewDomain;
  if (!domain) {
    const u = new URL(daemonUrl);
    domain = u.port ? `localhost:${u.port}` : "localhost";
  }
  return `${port}-${id}.${domain}`;
}
