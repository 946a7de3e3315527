// SVG line plots for benchmark reports (vega-lite compiled to vega, rendered headless to SVG in Node).
import * as vl from 'vega-lite';
import * as vega from 'vega';

export interface PlotSpec {
  title: string;
  data: Record<string, unknown>[];
  x: string;
  y: string;
  series: string;
  logX?: boolean;
  logY?: boolean;
  xTitle?: string;
  yTitle?: string;
}

export async function svgPlotAsync(p: PlotSpec): Promise<string> {
  const spec: vl.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: p.title,
    width: 560,
    height: 320,
    data: { values: p.data },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: p.x, type: 'quantitative', title: p.xTitle ?? p.x, scale: p.logX ? { type: 'log', base: 2 } : {} },
      y: { field: p.y, type: 'quantitative', title: p.yTitle ?? p.y, scale: p.logY ? { type: 'log' } : {} },
      color: { field: p.series, type: 'nominal', title: null },
    },
  };
  return renderSvg(spec);
}

/** Any vega-lite spec rendered headless to an SVG string (every benchmark plot goes through here). */
export function renderSvg(spec: vl.TopLevelSpec): Promise<string> {
  return new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' }).toSVG();
}

