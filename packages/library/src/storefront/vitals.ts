/**
 * Core Web Vitals measured with PerformanceObserver by the rules of Google's `web-vitals`
 * library (its v6 without soft navigations or back/forward-cache restores), each reported
 * at most once per page:
 *
 * - TTFB: the navigation's `responseStart` − `activationStart`, once the page has loaded;
 * - FCP: the `first-contentful-paint` entry, if the page was not hidden before it;
 * - LCP: the last `largest-contentful-paint` entry before the page was first hidden, reported
 *   at the first key press or click, or when the page is hidden;
 * - CLS: the largest session window of layout shifts without recent input (shifts less than
 *   1 s apart, a window at most 5 s long), reported when the page is first hidden (0 when
 *   nothing shifted);
 * - INP: the longest interaction (event entries grouped by `interactionId`, the longest
 *   entry of each), one skipped per 50 interactions (an estimated 98th percentile over the
 *   10 longest), reported when the page is first hidden, only when there was an interaction.
 *
 * Values in milliseconds (CLS unitless), relative to activation for prerendered pages.
 */
export type VitalName = 'lcp' | 'inp' | 'cls' | 'fcp' | 'ttfb';

type Entry = PerformanceEntry & { interactionId?: number; value?: number; hadRecentInput?: boolean; duration: number };

export function vitals(report: (name: VitalName, value: number) => void): void {
  const done = new Set<VitalName>();
  const once = (name: VitalName, value: number) => {
    if (!done.has(name) && value >= 0) {
      done.add(name);
      report(name, value);
    }
  };
  const nav = performance.getEntriesByType('navigation')[0] as (PerformanceNavigationTiming & { activationStart?: number }) | undefined;
  const activation = nav?.activationStart || 0;
  let hiddenAt = document.visibilityState == 'hidden' && !(document as { prerendering?: boolean }).prerendering ? 0 : Infinity;
  const observe = (type: string, fn: (entries: Entry[]) => void, o?: object): PerformanceObserver | undefined => {
    try {
      if (PerformanceObserver.supportedEntryTypes.includes(type)) {
        const po = new PerformanceObserver((l) => fn(l.getEntries() as Entry[]));
        po.observe({ type, buffered: true, ...o } as PerformanceObserverInit);
        return po;
      }
    } catch {}
  };
  const since = (t: number) => Math.max(t - activation, 0);

  // TTFB, once loaded
  const ttfb = () => nav && once('ttfb', since(nav.responseStart));
  document.readyState == 'complete' ? setTimeout(ttfb) : addEventListener('load', () => setTimeout(ttfb), { once: true });

  // FCP
  observe('paint', (es) => {
    for (const e of es) if (e.name == 'first-contentful-paint' && e.startTime < hiddenAt) once('fcp', since(e.startTime));
  });

  // LCP
  let lcp = -1;
  const lcpEntries = (es: Entry[]) => {
    const e = es[es.length - 1];
    if (e && e.startTime < hiddenAt) lcp = since(e.startTime);
  };
  const lcpObserver = observe('largest-contentful-paint', lcpEntries);
  const finalLcp = (e: Event) => {
    if (!e.isTrusted || !lcpObserver || done.has('lcp')) return;
    setTimeout(() => {
      lcpEntries(lcpObserver.takeRecords() as Entry[]);
      lcpObserver.disconnect();
      if (lcp >= 0) once('lcp', lcp);
    });
  };
  for (const t of ['keydown', 'click']) addEventListener(t, finalLcp, { once: true, capture: true });

  // CLS: session windows
  let cls = 0;
  let windowValue = 0;
  let first = 0;
  let last = 0;
  const shifts = (es: Entry[]) => {
    for (const e of es) {
      if (e.hadRecentInput) continue;
      if (windowValue && e.startTime - last < 1000 && e.startTime - first < 5000) windowValue += e.value!;
      else (windowValue = e.value!), (first = e.startTime);
      last = e.startTime;
      cls = Math.max(cls, windowValue);
    }
  };
  const clsObserver = observe('layout-shift', shifts);

  // INP: the 10 longest interactions, and how many there were
  const longest: { id: number; latency: number }[] = [];
  const ids = new Set<number>();
  const events = (es: Entry[]) => {
    for (const e of es) {
      const id = e.interactionId;
      if (!id) continue;
      ids.add(id);
      const i = longest.find((x) => x.id == id);
      if (i) i.latency = Math.max(i.latency, e.duration);
      else if (longest.length < 10 || e.duration > longest[longest.length - 1]!.latency) longest.push({ id, latency: e.duration });
      longest.sort((a, b) => b.latency - a.latency).splice(10);
    }
  };
  const inpObserver = 'PerformanceEventTiming' in self && 'interactionId' in PerformanceEventTiming.prototype && observe('event', events, { durationThreshold: 40 });
  // every interaction counts towards the percentile, also those shorter than the threshold above
  const counter = inpObserver && observe('event', (es) => es.forEach((e) => e.interactionId && ids.add(e.interactionId)), { durationThreshold: 16 });
  observe('first-input', events);

  const hidden = (e: Event) => {
    if (e.type == 'visibilitychange' && document.visibilityState != 'hidden') return;
    hiddenAt = Math.min(hiddenAt, e.timeStamp);
    if (lcpObserver && !done.has('lcp')) {
      lcpEntries(lcpObserver.takeRecords() as Entry[]);
      if (lcp >= 0) once('lcp', lcp);
    }
    if (clsObserver) {
      shifts(clsObserver.takeRecords() as Entry[]);
      once('cls', cls);
    }
    if (inpObserver) {
      events(inpObserver.takeRecords() as Entry[]);
      if (counter) counter.takeRecords().forEach((e) => (e as Entry).interactionId && ids.add((e as Entry).interactionId!));
      const inp = longest[Math.min(longest.length - 1, Math.floor(((performance as { interactionCount?: number }).interactionCount ?? ids.size) / 50))];
      if (inp) once('inp', inp.latency);
    }
  };
  // capture, on window: before the Library's own listeners cut and beacon the last batch
  addEventListener('visibilitychange', hidden, true);
  addEventListener('pagehide', hidden, true);
}
