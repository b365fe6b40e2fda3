// The Statistics page in headless Chromium: the note a fresh appliance
// shows before its first sample; then, against simulated Front Ends, the
// virtual service, member, DNS and SIP charts with their series, a
// connection made here through the VIP and DNS queries sent here as
// non-zero rates in the legends, a drain marked on the charts, the
// 15-minute range, polling that stops when the tab is left, and a viewer
// who opens the page too.
// Usage: node statistics.mjs BASE_URL ARTIFACT_DIR VIP_ADDRESS DNS_ADDRESS
// (both addresses IPv4 address:port on loopback).
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import { logIn, newPage, password, run, setUpAndLogIn } from "./harness.mjs";

const [base, artifacts, vip, dns] = process.argv.slice(2);
const viewerPassword = "viewer password 1";
const hostPort = (address) => {
  const cut = address.lastIndexOf(":");
  return { host: address.slice(0, cut), port: Number(address.slice(cut + 1)) };
};
// Connections through the VIP kept open (for the open connections chart).
const held = [];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An HTTP request through the VIP: the socket once a simulated member
// answered (left open if `keepOpen`, else closed), or null within 5 s.
function throughVip(keepOpen) {
  return new Promise((resolve) => {
    const socket = connect(hostPort(vip));
    let answer = "";
    let settled = false;
    const settle = (ok) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!ok || !keepOpen) socket.destroy();
      resolve(ok ? socket : null);
    };
    const timer = setTimeout(() => settle(false), 5000);
    socket.on("connect", () => socket.write("GET / HTTP/1.1\r\nHost: webint.contoso.test\r\n\r\n"));
    socket.on("data", (chunk) => {
      answer += chunk;
      if (answer.includes("demo member")) settle(true);
    });
    socket.on("error", () => settle(false));
    socket.on("close", () => settle(false));
  });
}

// One DNS query for `name`'s A over UDP: the answer's RCODE, or null
// within 3 s.
function dnsQuery(name) {
  const id = Math.floor(Math.random() * 65536);
  const question = name.split(".").flatMap((label) => [Buffer.from([label.length]), Buffer.from(label)]);
  const query = Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...question, Buffer.from([0, 0, 1, 0, 1])]);
  const { host, port } = hostPort(dns);
  return new Promise((resolve) => {
    const socket = createSocket("udp4");
    const timer = setTimeout(() => { socket.close(); resolve(null); }, 3000);
    socket.on("message", (message) => {
      clearTimeout(timer);
      socket.close();
      resolve(message[3] & 15);
    });
    socket.send(query, port, host);
  });
}

// The legend entry of `series` in the chart `kind` under `scope`, as
// [value now, peak] numbers.
const legendOf = (page, scope, kind, series) => page.evaluate(([scope, kind, series]) => {
  const item = document.querySelector(`${scope} figure[data-chart=${kind}] li[data-series=${series}]`);
  return item ? [Number(item.dataset.value), Number(item.dataset.peak)] : null;
}, [scope, kind, series]);

await run(artifacts, 150_000, async (browser, shot) => {
  const page = await newPage(browser);
  let polls = 0;
  page.on("request", (request) => { if (new URL(request.url()).pathname === "/api/v1/statistics") polls += 1; });
  await setUpAndLogIn(page, base);
  for (const member of ["fe01", "fe02", "fe03"]) {
    await page.locator(`tr[data-member=${member}] [data-monitor=fe-sip][data-state=up]`).waitFor();
  }
  // The Status tab's sparklines are still there.
  await page.locator("tr[data-member=fe01] svg.chart polyline").waitFor({ state: "attached" });

  // What an appliance answers in its first 10 s: no sample, and the page says why.
  const statistics = (url) => url.pathname === "/api/v1/statistics";
  await page.route(statistics, (route) => route.fulfill({ json: { interval_s: 10, samples: [], changes: [] } }));
  await page.click("#tabs button[data-tab=statistics]");
  await page.locator("#stats-empty", { hasText: "the first sample comes 10 s after start" }).waitFor();
  if (await page.locator("#stats-services").isVisible()) throw new Error("charts shown without a sample");
  await shot(page, "statistics-empty");
  await page.unroute(statistics);

  // Traffic of this test's own: connections through the VIP (one left
  // open), answers with data and for a name that does not exist.
  let open = null;
  for (let attempt = 0; attempt < 20 && !open; attempt += 1) {
    open = await throughVip(true);
    if (!open) await sleep(500);
  }
  if (!open) throw new Error(`no simulated member answered through the VIP ${vip}`);
  held.push(open);
  for (let i = 0; i < 3; i += 1) {
    if (!(await throughVip(false))) throw new Error("a connection through the VIP failed");
  }
  for (let i = 0; i < 5; i += 1) {
    if (await dnsQuery("pool01.contoso.test") !== 0) throw new Error("pool01.contoso.test: no answer with data");
  }
  for (let i = 0; i < 2; i += 1) {
    if (await dnsQuery("nothere.contoso.test") !== 3) throw new Error("nothere.contoso.test: not NXDOMAIN");
  }
  // A committed change, to be marked on the charts.
  const drained = await page.evaluate(async () => (await api("POST", "/api/v1/pools/pool01/members/fe02/drain", {})).status);
  if (drained !== 200) throw new Error(`drain answered ${drained}`);

  // The first sample comes within ~10 s of start and the page polls every
  // 10 s: the charts appear, then this test's traffic in their legends.
  const service = "#stats-services [data-service=web-internal]";
  await page.locator(`${service} svg[data-chart=connections_per_s][data-series=connections]`).waitFor({ timeout: 30_000 });
  if (await page.locator("#stats-empty").isVisible()) throw new Error("the no-sample note stays with samples");
  await page.waitForFunction((service) => {
    const peak = (scope, kind, series) =>
      Number(document.querySelector(`${scope} figure[data-chart=${kind}] li[data-series=${series}]`)?.dataset.peak);
    return peak(service, "connections_per_s", "connections") > 0 && peak(service, "active", "open") >= 1
      && peak("#stats-dns", "queries_per_s", "queries") > 0 && peak("#stats-dns", "queries_per_s", "nxdomain") > 0
      && [...document.querySelectorAll(`${service} svg g.change title`)].some((t) => t.textContent.includes("pool01/fe02 becomes draining"));
  }, service, { timeout: 30_000 });

  // The service: connections/s (the label and the legend say so, with the
  // unit), bytes in and out, open connections.
  const connections = page.locator(`${service} svg[data-chart=connections_per_s]`);
  const label = await connections.getAttribute("aria-label");
  const peak = /^web-internal connections per second, the last hour: connections .* conn\/s now, peak ([\d.]+) conn\/s$/.exec(label);
  if (!peak || !(Number(peak[1]) > 0)) throw new Error(`connections chart label: ${label}`);
  const legend = await page.locator(`${service} figure[data-chart=connections_per_s] li[data-series=connections]`).textContent();
  if (!/conn\/s now · peak [\d.]+ conn\/s/.test(legend)) throw new Error(`connections legend: ${legend}`);
  if (!/^[\d.]+ conn\/s$/.test(await connections.locator("text.y-max").textContent())) throw new Error("no y maximum in conn/s");
  const ticks = await connections.locator("g.tick text").allTextContents();
  if (ticks.length < 3 || !ticks.every((t) => /^\d\d:\d\d$/.test(t))) throw new Error(`time axis of the hour: ${ticks}`);
  const bytes = page.locator(`${service} svg[data-chart=bytes_per_s]`);
  if (await bytes.getAttribute("data-series") !== "in out") throw new Error("bytes chart without in and out");
  if (!/^[\d.]+ (B|KB|MB)\/s$/.test(await bytes.locator("text.y-max").textContent())) throw new Error("bytes chart's maximum without its unit");
  const [, bytesOut] = await legendOf(page, service, "bytes_per_s", "out");
  if (!(bytesOut > 0)) throw new Error("no bytes out through the VIP");
  await bytes.locator("polyline[data-series=out]").waitFor({ state: "attached" });

  // Each member of the pool: connections/s, bytes/s, health transitions.
  for (const member of ["fe01", "fe02", "fe03"]) {
    const scope = `#stats-members [data-pool=pool01] [data-member=${member}]`;
    for (const kind of ["connections_per_s", "bytes_per_s"]) await page.locator(`${scope} svg[data-chart=${kind}]`).waitFor();
    if (await page.locator(`${scope} svg[data-chart=transitions]`).getAttribute("data-series") !== "down up") throw new Error(`${member}: transitions`);
  }

  // DNS: queries and each kind of answer; SIP: requests, redirects, bad requests.
  const dnsSeries = await page.locator("#stats-dns svg[data-chart=queries_per_s]").getAttribute("data-series");
  if (dnsSeries !== "queries data nodata nxdomain refused servfail other dropped") throw new Error(`DNS series: ${dnsSeries}`);
  const [, dataPeak] = await legendOf(page, "#stats-dns", "queries_per_s", "data");
  if (!(dataPeak > 0)) throw new Error("answers with data not charted");
  const dnsLabel = await page.locator("#stats-dns svg").getAttribute("aria-label");
  if (!dnsLabel.startsWith("DNS queries and answers per second, the last hour: queries ") || !dnsLabel.includes("queries/s")) throw new Error(`DNS label: ${dnsLabel}`);
  const sipSeries = await page.locator("#stats-sip svg[data-chart=requests_per_s]").getAttribute("data-series");
  if (sipSeries !== "requests redirects bad_requests") throw new Error(`SIP series: ${sipSeries}`);
  await page.locator("#stats-services").scrollIntoViewIfNeeded();
  await shot(page, "statistics");

  // The last 15 minutes.
  await page.click("#stats-range button[data-minutes='15']");
  await page.locator(`${service} svg[data-chart=connections_per_s][data-range='15']`).waitFor();
  if (!(await connections.getAttribute("aria-label")).includes("the last 15 minutes")) throw new Error("range not in the label");
  await shot(page, "statistics-15-minutes");
  await page.click("#stats-range button[data-minutes='60']");
  await page.locator(`${service} svg[data-range='60']`).first().waitFor();

  // Leaving the tab stops the polling: nothing is asked for over more than
  // one interval (while a viewer opens the page in a browser of their own).
  await page.click("#tabs button[data-tab=status]");
  const left = Date.now();
  const pollsWhenLeft = polls;
  const created = await page.evaluate(async (secret) =>
    (await api("POST", "/api/v1/users", { username: "watcher", password: secret, role: "viewer" })).status, viewerPassword);
  if (created !== 201) throw new Error(`viewer not created: ${created}`);
  const viewer = await newPage(browser);
  await viewer.goto(base);
  await logIn(viewer, "watcher", viewerPassword);
  await viewer.locator("#who-role", { hasText: "viewer" }).waitFor();
  await viewer.click("#tabs button[data-tab=statistics]");
  await viewer.locator("#stats-dns svg[data-series]").waitFor();
  // A few samples in, on the last 15 minutes (the lines, not only dots).
  await viewer.waitForFunction(() => (document.querySelector(
    "#stats-services [data-service=web-internal] svg[data-chart=connections_per_s] polyline")?.getAttribute("points") || "")
    .split(" ").length >= 3, null, { timeout: 30_000 });
  await viewer.click("#stats-range button[data-minutes='15']");
  await viewer.locator("#stats-services svg[data-range='15']").first().waitFor();
  await shot(viewer, "viewer-statistics");
  await viewer.context().close();
  await sleep(Math.max(0, left + 12_000 - Date.now())); // at least one interval, whatever the viewer took
  if (polls !== pollsWhenLeft) throw new Error(`${polls - pollsWhenLeft} statistics requests after the tab was left`);
});
// Closed whatever became of the test, or node would wait for them.
for (const socket of held) socket.destroy();
