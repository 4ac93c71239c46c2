// dicom-node dashboard: slice-by-slice previews and live job progress. No framework.
"use strict";

function setupPreview(box) {
  const img = box.querySelector(".preview-img");
  const range = box.querySelector(".slice-range");
  const label = box.querySelector(".slice-label");
  const windowSelect = box.querySelector(".window-select");
  const count = Number(box.dataset.slices);
  const show = (slice) => {
    const s = Math.max(0, Math.min(count - 1, slice));
    range.value = String(s);
    label.textContent = "slice " + (s + 1) + " / " + count;
    const params = new URLSearchParams({ slice: String(s) });
    if (windowSelect) params.set("window", windowSelect.value);
    img.src = "/api/v1/outputs/" + box.dataset.output + "/preview.png?" + params.toString();
    img.alt = "source, synthetic and difference, slice " + (s + 1);
  };
  const current = () => Number(range.value);
  range.addEventListener("input", () => show(current()));
  box.querySelector(".slice-prev").addEventListener("click", () => show(current() - 1));
  box.querySelector(".slice-next").addEventListener("click", () => show(current() + 1));
  if (windowSelect) windowSelect.addEventListener("change", () => show(current()));
  box.addEventListener("keydown", (event) => {
    if (event.target.tagName === "SELECT") return;
    const step = { ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1,
                   PageDown: -10, PageUp: 10 }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    show(current() + step);
  });
}

function renderJob(row, job) {
  const state = row.querySelector(".job-state span");
  state.textContent = job.state;
  state.className = "state state-" + job.state;
  const bar = row.querySelector("progress");
  const text = row.querySelector(".progress-text");
  const total = job.slices_total || 0;
  const done = job.slices_done || 0;
  bar.max = total || 1;
  bar.value = total ? done : (job.state === "done" ? 1 : 0);
  text.textContent = total ? done + " / " + total + " slices" : (job.state === "done" ? "done" : "");
  row.querySelector(".error-text").textContent = job.error || "";
}

function pollJobs(table) {
  const tick = async () => {
    let jobs;
    try {
      const response = await fetch(table.dataset.poll, { credentials: "same-origin" });
      if (!response.ok) return;
      jobs = await response.json();
    } catch (error) {
      return;
    } finally {
      if (!jobs || jobs.some((j) => j.state === "pending" || j.state === "running")) {
        setTimeout(tick, 2000);
      }
    }
    for (const job of jobs) {
      const row = table.querySelector('tr[data-job="' + job.id + '"]');
      if (row) renderJob(row, job);
    }
  };
  setTimeout(tick, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".preview").forEach(setupPreview);
  const jobs = document.getElementById("jobs");
  if (jobs) pollJobs(jobs);
});
