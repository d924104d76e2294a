"""`segkit app` on a real WORK and a run trained on it, in headless Chromium: how long the review
grid and a prediction take, and the README's screenshots (docs/app-review.png, docs/app-model.png).
Reads only: no decision is written.

    .venv/bin/python benchmarks/app_real.py WORK RUNS_DIR OUT_DIR
    .venv/bin/python benchmarks/app_real.py .data/kv /tmp/realruns docs     # Kvasir-SEG, this repo's figures
"""
import shutil, socket, threading, time, sys
from pathlib import Path
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from segapp.server import create_app

work, runs, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
t0 = time.perf_counter()
app = create_app(work, runs, device="cpu")
print(f"app created in {time.perf_counter() - t0:.1f} s")
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started: time.sleep(0.05)
opts = webdriver.ChromeOptions(); opts.binary_location = shutil.which("chromium")
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"): opts.add_argument(a)
d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts); d.implicitly_wait(30)
url = f"http://127.0.0.1:{port}"
t0 = time.perf_counter(); d.get(url + "/")

while len(d.find_elements(By.CSS_SELECTOR, ".card")) < 1000: time.sleep(0.1)
print(f"review grid of {len(d.find_elements(By.CSS_SELECTOR, '.card'))} cards in {time.perf_counter() - t0:.1f} s")
Select(d.find_element(By.ID, "sort")).select_by_value("misaligned")
time.sleep(4)
d.find_elements(By.CSS_SELECTOR, ".card")[0].click(); time.sleep(3)
d.save_screenshot(str(out / "app-review.png"))
d.get(url + "/model")
sel = Select(d.find_element(By.ID, "test")); sel.select_by_index(3)
t0 = time.perf_counter()
while not d.find_elements(By.CSS_SELECTOR, "figure.result"): time.sleep(0.1)
print(f"prediction shown in {time.perf_counter() - t0:.1f} s:", d.find_element(By.CSS_SELECTOR, "figure.result figcaption").text)
d.find_element(By.ID, "files").send_keys("/work/shared/data/Kvasir-SEG/images/" + sorted(p.name for p in Path("/work/shared/data/Kvasir-SEG/images").iterdir())[5])
while len(d.find_elements(By.CSS_SELECTOR, "figure.result")) < 2: time.sleep(0.1)
time.sleep(1)
d.save_screenshot(str(out / "app-model.png"))
print("uploaded:", d.find_elements(By.CSS_SELECTOR, "figure.result figcaption")[0].text)
d.quit(); server.should_exit = True
