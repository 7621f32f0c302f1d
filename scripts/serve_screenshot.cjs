// Open the serve page in headless Chromium, upload one query and screenshot the answer.
//   node scripts/serve_screenshot.cjs URL QUERY_IMAGE OUT.png PROFILE_DIR
// Run through scripts/serve_screenshot.sh, which starts the server and provides playwright-core.
// Fails when the page asks anything of another origin: it must be self-contained.
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.env.PLAYWRIGHT_DIR, "node_modules", "playwright-core"));

const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

async function main([url, query, out, profile]) {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: FLAGS,
    viewport: { width: 1100, height: 900 },
  });
  const foreign = [];
  const problems = [];
  const origin = new URL(url).origin;
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on("request", (request) => {
      const target = request.url();
      if (!target.startsWith(origin) && !target.startsWith("blob:")) foreign.push(target);
    });
    page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
    page.on("response", (response) => {
      if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`);
    });
    await page.goto(url);
    await page.waitForFunction(() => !document.getElementById("health").textContent.startsWith("Loading"));
    await page.setInputFiles("#file", query);
    await page.waitForFunction(() => document.querySelectorAll("#hits li").length > 0, null,
      { timeout: 60000 });
    await page.waitForLoadState("networkidle");
    await page.screenshot({ path: out, fullPage: true });
    console.log(`status: ${await page.textContent("#status")}`);
    console.log(`query: ${await page.textContent("#level")} / ${await page.textContent("#box-text")}`);
  } finally {
    await context.close();
  }
  if (foreign.length) throw new Error(`the page requested other origins: ${foreign.join(", ")}`);
  if (problems.length) throw new Error(`the page logged errors: ${problems.join(" | ")}`);
  console.log(`wrote ${out}`);
}

main(process.argv.slice(2)).catch((error) => { console.error(error.message); process.exit(1); });
