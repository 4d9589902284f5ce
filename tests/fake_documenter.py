"""A stand-in for an LLM documenter CLI, for the tests: it never calls a model.

    fake_documenter.py MODE CALLS_FILE [claude's own arguments...]

Each call appends one line to CALLS_FILE (`@state`: fake-calls.log in the calling clone's
state directory, so that clones share one command and so one settings key) before it
answers: the file's path (from CQ_PATH), the arguments, whether stdin began with cq's
prompt, and the working directory.  MODE is one of:

  claude      Claude Code's `--output-format json` answer, with a cq-shaped JSON result
  cost=X      the same, reporting X US dollars
  plain       plain text on stdout
  slow=S      plain text after S seconds
  limit-until=F  Claude Code's old usage-limit line, resetting at the epoch file F holds,
              and exit 1, while that epoch is in the future; then like claude
  limit-clock=T  Claude Code's new usage-limit line ("resets T (Europe/Berlin)", T such as
              1pm), and exit 1
  slow-or-limit  README.md: plain text; slow.py: plain text after 3 seconds; any other
              file: the limit line, resetting in an hour, and exit 1
  hang        sleep for an hour
  flood       print without end
  fail        an error on stderr and exit 3
  fail-while=F  like fail while file F exists, then like plain
"""

import json
import os
import sys
import time


def answer(cost: float) -> None:
    path = os.environ.get("CQ_PATH", "?")
    stem = os.path.splitext(os.path.basename(path))[0]
    result = {"summary": f"llm summary of {path}: handles zephyrwidget {stem}",
              "symbols": {"documented_function": f"llm note for {stem}"}}
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False,
                      "result": json.dumps(result), "total_cost_usd": cost,
                      "usage": {"input_tokens": 100, "output_tokens": 20}}))


def main() -> int:
    mode, calls = sys.argv[1], sys.argv[2]
    if calls == "@state":
        calls = os.path.join(os.environ["CQ_STATE_DIR"], "fake-calls.log")
    prompted = sys.stdin.buffer.read().startswith(b"You are writing the entry")
    with open(calls, "a") as f:
        f.write(f"{os.environ.get('CQ_PATH', '?')} {' '.join(sys.argv[3:])} "
                f"prompted={prompted} cwd={os.getcwd()}\n")
    name, _, value = mode.partition("=")
    if name == "claude":
        answer(0.0)
    elif name == "cost":
        answer(float(value))
    elif name == "plain":
        print(f"plain summary of {os.environ.get('CQ_PATH')}")
    elif name == "slow":
        time.sleep(float(value))
        print(f"slow summary of {os.environ.get('CQ_PATH')}")
    elif name == "limit-until":
        with open(value) as f:
            until = int(f.read())
        if until > time.time():
            print(f"Claude AI usage limit reached|{until}")
            return 1
        answer(0.0)
    elif name == "limit-clock":
        print(f"You've hit your limit · resets {value} (Europe/Berlin)")
        return 1
    elif name == "slow-or-limit":
        if os.environ.get("CQ_PATH") in ("slow.py", "README.md"):
            time.sleep(3 if os.environ["CQ_PATH"] == "slow.py" else 0)
            print(f"plain summary of {os.environ['CQ_PATH']}")
        else:
            print(f"Claude AI usage limit reached|{int(time.time()) + 3600}")
            return 1
    elif name == "hang":
        time.sleep(3600)
    elif name == "flood":
        line = "x" * 1023 + "\n"
        while True:
            sys.stdout.write(line)
    elif name == "fail" or (name == "fail-while" and os.path.exists(value)):
        print("the model is unavailable", file=sys.stderr)
        return 3
    elif name == "fail-while":
        print(f"plain summary of {os.environ.get('CQ_PATH')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
