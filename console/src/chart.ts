/**
 * A small time-series line chart in SVG (no library): one series, its newest value in the title, a dashed
 * limit line when there is one, and a text summary for screen readers. `points` is in the element's
 * `data-points` attribute.
 */
const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 160;
const PAD = { left: 56, right: 8, top: 10, bottom: 22 };

/** One point: epoch milliseconds and a value. */
export interface Point {
  t: number;
  v: number;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A chart that redraws on `set`. */
export class Chart {
  readonly el: HTMLElement;
  private readonly plot: SVGSVGElement;
  private readonly heading: HTMLElement;

  constructor(
    private readonly title: string,
    private readonly format: (v: number) => string,
    id: string,
  ) {
    this.heading = document.createElement("h3");
    this.heading.textContent = title;
    this.plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", preserveAspectRatio: "none", class: "chart-svg" });
    this.el = document.createElement("figure");
    this.el.className = "chart";
    this.el.id = id;
    this.el.append(this.heading, this.plot);
    this.set([], 0);
  }

  /** Draws `points` (oldest first) against `limit` (0: none; the axis then fits the data). */
  set(points: Point[], limit: number): void {
    const last = points[points.length - 1];
    this.heading.textContent = `${this.title}: ${last ? this.format(last.v) : "no samples yet"}${limit ? ` of ${this.format(limit)}` : ""}`;
    this.el.dataset.points = String(points.length);
    this.el.dataset.last = last ? String(last.v) : "";
    this.plot.setAttribute("aria-label", `${this.title}, ${points.length} samples${last ? `, newest ${this.format(last.v)}` : ""}`);
    this.plot.replaceChildren();
    const top = Math.max(limit, ...points.map((p) => p.v));
    // Nothing measured yet (or all zero): a unit scale, not a hair's breadth.
    const max = top > 0 ? top * (limit ? 1 : 1.15) : 1;
    const t0 = points[0]?.t ?? 0;
    const t1 = Math.max(last?.t ?? 1, t0 + 1);
    const x = (t: number): number => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
    const y = (v: number): number => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
    // Axes and labels.
    this.plot.append(
      svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" }),
      svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: "axis" }),
      svg("text", { x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end", class: "label" }, this.format(max)),
      svg("text", { x: PAD.left - 4, y: H - PAD.bottom, "text-anchor": "end", class: "label" }, this.format(0)),
    );
    if (points.length) {
      const fmt = (t: number): string => new Date(t).toLocaleTimeString();
      this.plot.append(
        svg("text", { x: PAD.left, y: H - 6, class: "label" }, fmt(t0)),
        svg("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end", class: "label" }, fmt(t1)),
      );
    }
    if (limit) this.plot.append(svg("line", { x1: PAD.left, y1: y(limit), x2: W - PAD.right, y2: y(limit), class: "limit" }));
    if (!points.length) return;
    const xs = points.length === 1 ? [(PAD.left + W - PAD.right) / 2] : points.map((p) => x(p.t));
    this.plot.append(svg("polyline", { points: points.map((p, i) => `${xs[i]!.toFixed(1)},${y(p.v).toFixed(1)}`).join(" "), class: "line" }));
    const step = Math.max(1, Math.ceil(points.length / 120));
    points.forEach((p, i) => {
      if (i % step === 0 || i === points.length - 1) this.plot.append(svg("circle", { cx: xs[i]!.toFixed(1), cy: y(p.v).toFixed(1), r: 2.5, class: "point" }));
    });
  }
}
