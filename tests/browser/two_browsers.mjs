// Two browsers, two servers, one room: the demo page through the load balancer.
//
// Opens browser contexts (each its own cookie jar, as two people would be)
// until two of them land on different backends, joins both to one room, sends a
// message from each, and checks that each page shows the other's message.
// Usage: node two_browsers.mjs http://127.0.0.1:18080/ [screenshot.png]
// Prints one JSON report; exits non-zero on failure.
import { chromium } from "playwright-core";

const url = process.argv[2];
const screenshot = process.argv[3];
const chromiumArgs = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

async function openPage(browser) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(url);
  await page.locator("#status", { hasText: "connected" }).waitFor({ timeout: 15000 });
  const server = (await page.locator("#server").textContent()).trim();
  return { context, page, server };
}

async function sendAndExpect(from, to, text) {
  await from.page.fill("#text", text);
  await from.page.click("#send");
  await to.page.locator("#messages li.message", { hasText: text }).waitFor({ timeout: 10000 });
}

const report = { url };
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: chromiumArgs });
try {
  const opened = [];
  let pair = null;
  for (let attempt = 0; attempt < 12 && !pair; attempt++) {
    const candidate = await openPage(browser);
    const other = opened.find((item) => item.server !== candidate.server);
    opened.push(candidate);
    if (other) pair = [other, candidate];
  }
  report.servers_seen = [...new Set(opened.map((item) => item.server))];
  if (!pair) throw new Error(`every browser landed on the same server: ${report.servers_seen}`);
  const room = `browser-${Date.now()}`;
  for (const side of pair) {
    await side.page.fill("#room", room);
    await side.page.click("#join");
    await side.page.locator("#current-room", { hasText: room }).waitFor({ timeout: 10000 });
  }
  await sendAndExpect(pair[0], pair[1], "hello from the first browser");
  await sendAndExpect(pair[1], pair[0], "and back from the second");
  report.pair = pair.map((side) => side.server);
  report.room = room;
  if (screenshot) await pair[1].page.screenshot({ path: screenshot, fullPage: true });
  report.ok = true;
} catch (error) {
  report.failure = String(error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
