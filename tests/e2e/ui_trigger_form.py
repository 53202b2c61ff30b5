"""Log into the Airflow UI with headless Chromium and read a DAG's trigger form, type an out-of-bounds epochs; print what it shows as JSON.

Run by tests/e2e/test_airflow_live.py with the tools environment's Python (selenium lives there) and
Debian's chromium and chromedriver: ``ui_trigger_form.py URL USER PASSWORD DAG_ID``.
"""

import json
import sys

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait


def read_trigger_form(url: str, user: str, password: str, dag_id: str) -> dict:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    # The UI sends a signed-out browser on to its login page from script: an element looked up while that
    # navigation runs fails with "aborted by navigation", so the wait polls again (it still times out at 30 s).
    wait = WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,))
    try:
        driver.get(f"{url}/dags/{dag_id}")
        wait.until(expected_conditions.presence_of_element_located((By.NAME, "username"))).send_keys(user)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "/auth/login" not in d.current_url)
        driver.get(f"{url}/dags/{dag_id}")
        trigger = wait.until(expected_conditions.element_to_be_clickable(
            (By.XPATH, "//button[normalize-space()='Trigger']")))
        trigger.click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "body"), "Run Parameters"))
        dialog = driver.find_element(By.XPATH, "//*[@role='dialog'][contains(., 'Run Parameters')]")
        text = dialog.get_attribute("innerText")
        # Out of bounds: type 0 into epochs (minimum 1) and leave the field, as a user would.
        epochs = dialog.find_element(By.CSS_SELECTOR, "input[name=element_epochs]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", epochs)
        epochs.click()
        epochs.send_keys(Keys.CONTROL, "a")
        epochs.send_keys("0")
        typed = epochs.get_attribute("value")
        epochs.send_keys(Keys.TAB)
        try:  # the form corrects it on blur, or leaves it: either way the test reads the value
            WebDriverWait(driver, 5).until(lambda _: epochs.get_attribute("value") != typed)
        except TimeoutException:
            pass
        # The framework field is a select showing its current value: open it and read its choices.
        control = dialog.find_element(By.CSS_SELECTOR, "#element_framework input[role=combobox]")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", control)
        control.click()
        menu = "#element_framework [role=option]"
        wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, menu)))
        choices = [option.text for option in driver.find_elements(By.CSS_SELECTOR, menu)]
        return {"url": driver.current_url, "form_text": text, "framework_choices": choices,
                "epochs_typed": typed, "epochs_after_leaving": epochs.get_attribute("value")}
    finally:
        driver.quit()


if __name__ == "__main__":
    print(json.dumps(read_trigger_form(*sys.argv[1:5])))
