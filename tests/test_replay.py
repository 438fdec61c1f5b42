"""The `replay:` provider and `prompts import-skillmix`: re-running Skill-Mix on recorded replies.

The official-layout fixture is written here the way LeoYu/skill-mix writes its outputs: prompts are Python
format strings filled with `str.format` (as upstream's task.py does), the student's text is cut from its
reply after 'Answer:' and before 'Explanation', and the grader's table points and the programmatic sentence
point are recorded per row. The prompt wording is our own; only the layout and placeholders follow upstream.
"""

from __future__ import annotations

import csv
import itertools
import json
import sqlite3

import pytest

from skillweave.metrics.skillmix import aggregate_records, count_sentences
from skillweave.store import Store

SKILLS = [  # (category, skill, definition, example, status)
    ("rhetorical", "red herring", "Bringing up something beside the point to draw attention away.",
     "Asked about the bill, she praised the weather.", "keep"),
    ("literary", "metaphor", "Calling one thing by the name of another to suggest a likeness.",
     "Time is a thief.", ""),
    ("logical", "modus ponens", "From 'if P then Q' and P, concluding Q.", "If it rains the road is wet; it rains.",
     "keep"),
    ("logical", "begging the question", "A circular argument.", "It is true because it is true.", "remove"),
]
TOPICS = ["Sewing", "Knots"]
GENERATION = [
    "Write a short text set in {topic} that uses these {num_skills_str} skills: {skills_str}.\n"
    "Definitions:\n{skills_defs_and_examples_simple}\nStart with 'Answer:'; {{braces}} stay literal.",
    "Now improve it; use at most {num_sentences_str}. Start with 'Answer:' again, then 'Explanation:'.",
]
GRADING = [
    "Grade this text about {topic} (at most {num_sentences_str}), which should show {skills_str}.\n"
    "Text: \"{student_answer}\"\nSkills:\n{skills_defs_and_examples_simple}\n"
    "Make a rubric table, one row per criterion: {rubric_items}. End with 'Total Points Earned'."
]


def _words(n: int) -> str:
    return ["zero", "one", "two", "three"][n]


def _official_row_values(combo, topic):
    defs = {s[1]: s for s in SKILLS}
    k = len(combo)
    limit = max(1, k - 1)
    limit_str = f"{_words(limit)} sentence" + ("s" if limit > 1 else "")
    simple = "\n".join(f"**{c}**: {defs[c][2]} For example, {defs[c][3]}" for c in combo)
    rubric = ", ".join([f"Correctly illustrates {c.lower()}" for c in combo]
                       + [f"Pertains to {topic}", "Text makes sense", f"At most {limit_str}"])
    return dict(topic=topic, num_skills_str=_words(k), skills_str=", ".join(combo), num_skills=k,
                skills_defs_and_examples_simple=simple, num_sentences_str=limit_str, rubric_items=rubric)


def _write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def checkout(tmp_path):
    """A LeoYu/skill-mix-shaped checkout: prompts, skills.csv, topics.txt and test/ outputs for every ordered
    skill pair and topic (so any sampler's draws, in any order, have a recording)."""
    root = tmp_path / "skill-mix"
    (root / "prompts" / "generation").mkdir(parents=True)
    (root / "prompts" / "grade").mkdir(parents=True)
    (root / "prompts" / "generation" / "default.json").write_text(json.dumps(GENERATION, indent=4))
    (root / "prompts" / "grade" / "gpt.json").write_text(json.dumps(GRADING, indent=4))
    with (root / "skills.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["category", "skill", "definition", "example", "comments", "status", "added by"])
        for cat, skill, definition, example, status in SKILLS:
            writer.writerow([cat, skill, definition, example, "", status, ""])
    (root / "topics.txt").write_text("\n".join(TOPICS) + "\n")
    kept = [s[1] for s in SKILLS if s[4] != "remove"]
    student = root / "test" / "k2_s10_vdefault_r1" / "student-x"
    gen_rows, graded_rows = [], []
    for i, (combo, topic) in enumerate(itertools.product(itertools.permutations(kept, 2), TOPICS)):
        values = _official_row_values(combo, topic)
        prompts = [p.format(**values) for p in GENERATION]
        texts = [f"{topic} draft {i}.", f"In {topic}, {combo[0]} meets {combo[1]} (row {i})."
                 + (" A second sentence." if i % 3 == 0 else "")]
        replies = [f"Answer: {texts[0]}\nExplanation: first try.", f"Answer: {texts[1]}\nExplanation: better."]
        record = {"k": 2, "skills": ", \n".join(combo), "topic": topic, "system prompt": "You are a helpful assistant."}
        for t in range(2):
            record |= {f"user_{t}": prompts[t], f"assistant_{t}": replies[t], f"model_input_{t}": "[]",
                       f"text_{t}": replies[t].split("Answer:")[-1].split("Explanation")[0].strip()}
        gen_rows.append(record)
        conv = {"skills": list(combo), "topic": topic, "system prompt": record["system prompt"],
                "conv": [{"user": prompts[t], "assistant": replies[t]} for t in range(2)]}
        name = f"k_2-topic_{topic}-skills_{'_'.join(combo).replace(' ', '_')}.json"
        (student / "conv").mkdir(parents=True, exist_ok=True)
        (student / "conv" / name).write_text(json.dumps(conv, indent=4))
        points = [float(i % 2), 1.0, 1.0, float(i % 4 != 1), 1.0]
        table = "Here's the grading table:\n\n| Criteria | Points Earned |\n|---|---|\n" + "".join(
            f"| {c} | {p:g} |\n" for c, p in zip(values["rubric_items"].split(", "), points, strict=True))
        table += f"| Total Points Earned | {sum(points):g} |\n\nExplanation: ok."
        grading_prompt = GRADING[0].format(**values, student_answer=record["text_1"])
        graded_rows.append({"k": 2, "skills": record["skills"], "topic": topic, "system prompt": "",
                            "user_0": grading_prompt, "assistant_0": table, "model_input_0": "[]",
                            "score_0": sum(points), "score_extracted_0": sum(points),
                            "points_0": ",".join(str(p) for p in points),
                            "num_sentences_manual_in_student_answer_0": count_sentences(record["text_1"]),
                            "true_sentence_lim_pt_0": float(count_sentences(record["text_1"]) <= 1),
                            "num_sentences_extracted_eq_num_sentences_model_0": True})
    _write_csv(student / "records.csv", gen_rows)
    _write_csv(student / "graded" / "by_judge-x_on_text_1_1_gpt" / "records.csv", graded_rows)
    return root


def _run_on_release(cli_run, checkout, prompts, *, rounds: int = 1, judge: str | None = None):
    """`run skillmix` on the official catalog with the released records as student (and judge) recordings."""
    outputs = checkout / "test"
    return cli_run("--prompts-dir", str(prompts), "run", "skillmix", "--skills", str(checkout / "skills.csv"),
                   "--topics", str(checkout / "topics.txt"), "--k", "2", "--n", "5", "--rounds", str(rounds),
                   "--grading-samples", "1", "--model", f"replay:skillmix={outputs}",
                   "--judge", judge or f"replay:skillmix={outputs}")


def test_prompts_import_then_replay_reproduces_the_official_records_and_metrics(cli_run, db_path, checkout,
                                                                                  tmp_path):
    out = tmp_path / "official-prompts"
    code, stdout, err = cli_run("prompts", "import-skillmix", str(checkout), str(out))
    assert code == 0, err
    assert (out / "skillmix" / "student.yaml").is_file() and (out / "skillmix" / "judge.yaml").is_file()
    code, _, err = cli_run("prompts", "import-skillmix", str(checkout), str(out))
    assert code == 2 and "--force" in err  # never overwrites silently

    outputs = checkout / "test"
    code, stdout, err = _run_on_release(cli_run, checkout, out, judge=f"replay:{outputs}")
    assert code == 0, err
    store = Store(db_path)
    (run,) = store.list_runs()
    items = list(store.items(run["id"]))
    assert len(items) == 5 and all(i["status"] == "done" for i in items), [i.get("error") for i in items]

    gen = {(r["skills"], r["topic"]): r for r in csv.DictReader((outputs / "k2_s10_vdefault_r1" / "student-x" /
                                                                 "records.csv").open())}
    graded = {(r["skills"], r["topic"]): r for r in csv.DictReader(
        (outputs / "k2_s10_vdefault_r1" / "student-x" / "graded" / "by_judge-x_on_text_1_1_gpt" / "records.csv").open())}
    official_records = []
    for item in items:
        key = (", \n".join(item["skills"]), item["topic"])
        row, grade_row = gen[key], graded[key]
        # the same records: prompts as rendered upstream, replies, extracted texts
        assert item["payload"]["prompt_0"] == row["user_0"] and item["payload"]["prompt_1"] == row["user_1"]
        assert [item["payload"][f"output_{t}"] for t in range(2)] == [row["assistant_0"], row["assistant_1"]]
        assert [item["payload"][f"text_{t}"] for t in range(2)] == [row["text_0"], row["text_1"]]
        # the same points: the official parsed points with the programmatic sentence point
        official = [float(p) for p in grade_row["points_0"].split(",")]
        official[-1] = float(grade_row["true_sentence_lim_pt_0"])
        (grade,) = store.grades(item["id"])
        assert grade["points"] == official and grade["raw"] == grade_row["assistant_0"]
        official_records.append((item["combo_index"], item["round"], [official]))
    # the same metrics
    code, stdout, err = cli_run("report", run["id"], "--json")
    assert code == 0, err
    report = json.loads(stdout)["metrics"]["2"]
    expected = aggregate_records(official_records, 2)
    for name, label in [("all_points_earned_binary", "Ratio of Full Marks"),
                        ("all_skills_and_good_rest", "Ratio of All Skills"),
                        ("average_over_skills_filtered", "Skill Fraction")]:
        assert report[label]["mean"] == pytest.approx(expected[name]["mean"])
    # every call was answered from the recordings (5 items x 2 student turns + 5 judge calls)
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT count(*), count(error) FROM llm_calls WHERE provider = 'replay'").fetchone() == (15, 0)


def _second_round(checkout):
    """A copy of round 1 as round 2 with the same student replies (a greedy student answers alike), graded
    differently: the first rubric point is flipped in every row."""
    import shutil

    r1 = checkout / "test" / "k2_s10_vdefault_r1" / "student-x"
    r2 = checkout / "test" / "k2_s10_vdefault_r2" / "student-x"
    shutil.copytree(r1, r2)
    graded = r2 / "graded" / "by_judge-x_on_text_1_1_gpt" / "records.csv"
    rows = list(csv.DictReader(graded.open(newline="")))
    for row in rows:
        points = [float(p) for p in row["points_0"].split(",")]
        points[0] = 1.0 - points[0]
        row["points_0"] = ",".join(str(p) for p in points)
        lines = row["assistant_0"].split("\n")
        first = lines.index("|---|---|") + 1  # the first skill's row
        criterion = lines[first].split("|")[1]
        lines[first] = f"|{criterion}| {points[0]:g} |"
        row["assistant_0"] = "Round two.\n" + "\n".join(lines)
    _write_csv(graded, rows)
    return {(r["skills"], r["topic"]): r for r in csv.DictReader((r1 / "graded" / "by_judge-x_on_text_1_1_gpt" /
                                                                  "records.csv").open(newline=""))}, \
        {(r["skills"], r["topic"]): r for r in rows}


def test_each_round_gets_its_own_recorded_grade(cli_run, db_path, checkout, tmp_path):
    # the same text graded in two rounds is two recorded calls: each round's request gets one of them, never
    # the first round's grade twice
    first, second = _second_round(checkout)
    out = tmp_path / "official-prompts"
    assert cli_run("prompts", "import-skillmix", str(checkout), str(out))[0] == 0
    code, _, err = _run_on_release(cli_run, checkout, out, rounds=2)
    assert code == 0, err
    store = Store(db_path)
    (run,) = store.list_runs()
    items = list(store.items(run["id"]))
    assert len(items) == 10 and all(i["status"] == "done" for i in items), [i.get("error") for i in items]
    by_combo: dict = {}
    for item in items:
        (grade,) = store.grades(item["id"])
        by_combo.setdefault((", \n".join(item["skills"]), item["topic"]), []).append(grade["raw"])
    assert len(by_combo) == 5
    for key, raws in by_combo.items():
        assert sorted(raws) == sorted([first[key]["assistant_0"], second[key]["assistant_0"]])


def test_more_rounds_than_recorded_fail_instead_of_reusing_a_reply(cli_run, db_path, checkout, tmp_path):
    _second_round(checkout)
    out = tmp_path / "official-prompts"
    assert cli_run("prompts", "import-skillmix", str(checkout), str(out))[0] == 0
    _run_on_release(cli_run, checkout, out, rounds=3)
    store = Store(db_path)
    (run,) = store.list_runs()
    items = list(store.items(run["id"]))
    failed = [i for i in items if i["status"] == "failed"]
    assert len(items) == 15 and len(failed) == 5  # two recorded rounds answer two rounds; the third fails
    assert all("were used by earlier requests" in i["error"] for i in failed)
    con = sqlite3.connect(db_path)
    ok = con.execute("SELECT response FROM llm_calls WHERE error IS NULL AND role LIKE 'student%'").fetchall()
    assert len(ok) == len(set(ok)) * 2  # every recorded student reply handed out exactly twice: once per round


GRADING_POINTS = [
    "Grade this text about {topic} (at most {num_sentences_str}), meant to show {skills_str}.\n"
    "Text: \"{student_answer}\"\nSkills:\n{skills_defs}\nFor each of {rubric_items}, write 'Point earned: 1' "
    "or 'Point earned: 0'. End with 'Grade:' and the total."
]


def test_a_point_list_grading_prompt_is_parsed_as_upstream_parses_it(cli_run, db_path, checkout, tmp_path):
    # upstream reads grading versions 'llama' and '14' (and those without a rubric) by the number after each
    # 'earned:', not as a table; a converted 'llama' prompt must be read the same way in a run
    (checkout / "prompts" / "grade" / "llama.json").write_text(json.dumps(GRADING_POINTS))
    student = checkout / "test" / "k2_s10_vdefault_r1" / "student-x"
    rows = list(csv.DictReader((student / "records.csv").open(newline="")))
    defs = {s[1]: s for s in SKILLS}
    graded, expected = [], {}
    for i, row in enumerate(rows):
        combo = [s.strip() for s in row["skills"].split(",")]
        values = _official_row_values(combo, row["topic"])
        values["rubric_items"] = values["rubric_items"].replace("Correctly illustrates", "Contains")
        values["skills_defs"] = "\n".join(f"**{c}**: {defs[c][2]}" for c in combo)
        points = [1.0, float(i % 2), 1.0, float(i % 3 != 0), 1.0]
        reply = "".join(f"{n + 1}. {item}: reasons.\nPoint earned: {p:g}\n"
                        for n, (item, p) in enumerate(zip(values["rubric_items"].split(", "), points, strict=True)))
        reply += f"Grade: {sum(points):g}"
        sentence = float(count_sentences(row["text_1"]) <= 1)
        graded.append({"k": 2, "skills": row["skills"], "topic": row["topic"], "system prompt": "",
                       "user_0": GRADING_POINTS[0].format(**values, student_answer=row["text_1"]),
                       "assistant_0": reply, "model_input_0": "[]", "score_0": sum(points),
                       "score_extracted_0": sum(points), "points_0": ",".join(str(p) for p in points),
                       "num_sentences_manual_in_student_answer_0": count_sentences(row["text_1"]),
                       "true_sentence_lim_pt_0": sentence, "num_sentences_extracted_eq_num_sentences_model_0": True})
        expected[(row["skills"], row["topic"])] = [*points[:4], sentence]
    _write_csv(student / "graded" / "by_judge-x_on_text_1_1_llama" / "records.csv", graded)

    out = tmp_path / "official-prompts"
    code, _, err = cli_run("prompts", "import-skillmix", str(checkout), str(out), "--grading", "llama")
    assert code == 0, err
    outputs = checkout / "test"
    code, _, err = _run_on_release(cli_run, checkout, out, judge=f"replay:skillmix={outputs},grader=judge-x")
    assert code == 0, err
    store = Store(db_path)
    (run,) = store.list_runs()
    items = list(store.items(run["id"]))
    assert len(items) == 5 and all(i["status"] == "done" for i in items), [i.get("error") for i in items]
    for item in items:
        (grade,) = store.grades(item["id"])
        assert grade["points"] == expected[(", \n".join(item["skills"]), item["topic"])]
        assert grade["parse_status"] == "ok"


def test_a_reply_with_windows_line_endings_is_graded_from_its_recording(cli_run, db_path, checkout, tmp_path):
    # some chat models answer with '\r\n'; upstream's grader reads the text back from records.csv in text mode,
    # so the recorded grading prompt holds '\n' where the student's reply (and skillweave's text) hold '\r\n'
    student = checkout / "test" / "k2_s10_vdefault_r1" / "student-x"
    gen_path, graded_path = student / "records.csv", student / "graded" / "by_judge-x_on_text_1_1_gpt" / "records.csv"
    gen, graded = list(csv.DictReader(gen_path.open(newline=""))), list(csv.DictReader(graded_path.open(newline="")))
    for row, grade in zip(gen, graded, strict=True):
        text = row["text_1"].replace("(row", "\r\n(row")
        row["assistant_1"] = row["assistant_1"].replace(row["text_1"], text)
        grade["user_0"] = grade["user_0"].replace(row["text_1"], text.replace("\r\n", "\n"))
        row["text_1"] = text
    _write_csv(gen_path, gen)
    _write_csv(graded_path, graded)
    for conv in (student / "conv").glob("*.json"):
        conv.unlink()  # records.csv only
    out = tmp_path / "official-prompts"
    assert cli_run("prompts", "import-skillmix", str(checkout), str(out))[0] == 0
    code, _, err = _run_on_release(cli_run, checkout, out)
    assert code == 0, err
    store = Store(db_path)
    (run,) = store.list_runs()
    items = list(store.items(run["id"]))
    assert len(items) == 5 and all(i["status"] == "done" for i in items), [i.get("error") for i in items]
    assert all("\r\n" in i["payload"]["text_1"] for i in items)


def test_a_request_without_a_recording_is_a_recorded_failure(cli_run, db_path, checkout, tmp_path):
    # the packaged prompts differ from the recorded ones: nothing matches, every item fails with the reason
    outputs = checkout / "test"
    code, stdout, err = cli_run("run", "skillmix", "--skills", str(checkout / "skills.csv"), "--topics",
                                str(checkout / "topics.txt"), "--k", "2", "--n", "2", "--rounds", "1",
                                "--grading-samples", "1", "--model", f"replay:{outputs}")
    store = Store(db_path)
    (run,) = store.list_runs()
    items = list(store.items(run["id"]))
    assert items and all(i["status"] == "failed" for i in items)
    assert all("replay: no recorded reply for this conversation" in i["error"] for i in items)
    con = sqlite3.connect(db_path)
    calls = con.execute("SELECT response, error FROM llm_calls").fetchall()
    assert calls and all(r is None and "no recorded reply" in e for r, e in calls)
    assert store.db["grades"].count == 0  # nothing made up, nothing graded


def test_replay_from_an_earlier_run_in_a_store(cli_run, tmp_path):
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    args = ["run", "skillmix", "--k", "2", "--n", "3", "--rounds", "2", "--grading-samples", "2"]
    code, _, err = cli_run("--db", str(first), *args, "--model", "fake")
    assert code == 0, err
    code, _, err = cli_run("--db", str(second), *args, "--model", f"replay:store={first}")
    assert code == 0, err

    def texts(db):
        con = sqlite3.connect(db)
        return sorted(con.execute("SELECT role, request, response FROM llm_calls WHERE error IS NULL").fetchall(),
                      key=lambda r: (r[0], r[1]))

    a, b = texts(first), texts(second)
    assert len(a) == len(b) == 3 * 2 * 3
    assert [(r[0], json.loads(r[1])["messages"], r[2]) for r in a] == [(r[0], json.loads(r[1])["messages"], r[2])
                                                                         for r in b]
    code, out_a, _ = cli_run("--db", str(first), "report", "latest", "--json")
    code, out_b, _ = cli_run("--db", str(second), "report", "latest", "--json")
    assert json.loads(out_a)["metrics"] == json.loads(out_b)["metrics"]


@pytest.mark.parametrize("spec,message", [
    ("replay:", "unknown model spec"),
    ("replay:store=/nonexistent.db", "is not a file"),
    ("replay:skillmix=/nonexistent", "is not a folder"),
    ("replay:store=a.db,grader=x", "run= goes with store="),
])
def test_bad_replay_specs_are_usage_errors(cli_run, tmp_path, spec, message):
    (tmp_path / "a.db").write_text("")
    code, _, err = cli_run("run", "skillmix", "--k", "2", "--n", "1", "--model", spec.replace("a.db",
                                                                                               str(tmp_path / "a.db")))
    assert code == 2 and message in err and "Traceback" not in err


def test_a_folder_with_several_students_needs_student(cli_run, db_path, checkout):
    # two students answered the same prompts: without student= their replies would be handed out in turn, mixed
    import shutil

    outputs = checkout / "test"
    shutil.copytree(outputs / "k2_s10_vdefault_r1" / "student-x", outputs / "k2_s10_vdefault_r1" / "student-y")
    args = ["run", "skillmix", "--skills", str(checkout / "skills.csv"), "--topics", str(checkout / "topics.txt"),
            "--k", "2", "--n", "1", "--rounds", "1", "--grading-samples", "1"]
    code, _, err = cli_run(*args, "--model", f"replay:skillmix={outputs}")
    assert code == 2 and "2 students (student-x, student-y); add student=NAME" in err and "Traceback" not in err
    code, _, err = cli_run(*args, "--model", f"replay:skillmix={outputs},student=student-z")
    assert code == 2 and "holds no student 'student-z'" in err
    assert not Store(db_path).list_runs()  # refused before a run was created


def _release_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "skillmix_replay_release.py"
    spec = importlib.util.spec_from_file_location("skillmix_replay_release", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_release_replay_benchmark_on_the_fixture(checkout):
    (result,) = _release_bench().measure(checkout).values()
    assert result["records"] == result["student_equal"] == 12 and result["missing_count"] == 0
    assert result["samples"] == result["points_equal"] == 12
    assert all(v["official"] == v["replayed"] for v in result["metrics"]["2"].values())


def test_run_comparison_benchmark_on_the_fixture(cli_run, db_path, checkout, tmp_path):
    # benchmarks/skillmix_replay_release.py --db: a run compared with released rows in the order it drew them
    # agrees everywhere; against rows in another order it reports the differing pairs
    import shutil
    from pathlib import Path

    out = tmp_path / "official-prompts"
    assert cli_run("prompts", "import-skillmix", str(checkout), str(out))[0] == 0
    code, _, err = _run_on_release(cli_run, checkout, out)
    assert code == 0, err
    bench = _release_bench()
    everything = bench.compare_run(checkout, Path(db_path), "student-x")["per_k"]["2"]
    assert everything["items"] == everything["done"] == 5 and everything["pairs_equal"] < 5
    assert everything["differences"]

    drawn = tmp_path / "drawn"  # the same checkout, its released rows cut to the run's draws in its order
    shutil.copytree(checkout, drawn)
    folder = drawn / "test" / "k2_s10_vdefault_r1" / "student-x"
    graded_csv = folder / "graded" / "by_judge-x_on_text_1_1_gpt" / "records.csv"
    gen = {(r["skills"], r["topic"]): r for r in csv.DictReader((folder / "records.csv").open(newline=""))}
    graded = {(r["skills"], r["topic"]): r for r in csv.DictReader(graded_csv.open(newline=""))}
    store = Store(db_path)
    (run,) = store.list_runs()
    order = [(", \n".join(i["skills"]), i["topic"]) for i in sorted(store.items(run["id"]),
                                                                     key=lambda i: i["combo_index"])]
    _write_csv(folder / "records.csv", [gen[key] for key in order])
    _write_csv(graded_csv, [graded[key] for key in order])
    result = bench.compare_run(drawn, Path(db_path), "student-x")["per_k"]["2"]
    assert result["pairs_equal"] == result["records_reproduced"] == 5, result["differences"]
    assert result["grades"] == result["grades_equal"] == result["points_equal"] == 5
    for m in result["metrics"].values():
        assert m["run"] == m["official_points"]


@pytest.mark.skipif(not __import__("os").environ.get("SKILLWEAVE_OFFICIAL_SKILLMIX"),
                    reason="SKILLWEAVE_OFFICIAL_SKILLMIX not set")
def test_release_replay_on_a_checkout_of_the_official_repository():
    import os
    from pathlib import Path

    out = _release_bench().measure(Path(os.environ["SKILLWEAVE_OFFICIAL_SKILLMIX"]), raw_definitions=True)
    gpt4 = out["gpt-4"]  # the student graded with the released 'gpt' grading prompt
    assert gpt4["records"] == gpt4["student_equal"] == gpt4["judge_found"] == 10
    assert gpt4["points_equal"] == gpt4["samples"] == 30
    assert all(v["official"] == v["replayed"] for v in gpt4["metrics"]["3"].values())


@pytest.mark.skipif(not __import__("os").environ.get("SKILLWEAVE_OFFICIAL_SKILLMIX"),
                    reason="SKILLWEAVE_OFFICIAL_SKILLMIX not set")
def test_end_to_end_replay_of_the_released_gpt4_run(cli_run, db_path, tmp_path):
    # as a user would: convert the official prompts, run skillmix on the official catalog with the released
    # experiment's seed, k and n (test_pipeline.sh: k=3, n=5, seed=10, 3 grading runs; gpt-4's rounds 2 and 3 are
    # released), replaying student and grader, then compare item by item and the metrics
    import os
    from pathlib import Path

    checkout = Path(os.environ["SKILLWEAVE_OFFICIAL_SKILLMIX"])
    out, outputs = tmp_path / "official-prompts", checkout / "test"
    assert cli_run("prompts", "import-skillmix", str(checkout), str(out))[0] == 0
    replay = f"replay:skillmix={outputs},student=gpt-4"
    code, _, err = cli_run("--prompts-dir", str(out), "run", "skillmix", "--skills", str(checkout / "skills.csv"),
                           "--topics", str(checkout / "topics.txt"), "--k", "3", "--n", "5", "--seed", "10",
                           "--rounds", "2", "--grading-samples", "3", "--model", replay, "--judge", replay)
    assert code == 0, err
    result = _release_bench().compare_run(checkout, Path(db_path), "gpt-4")["per_k"]["3"]
    assert result["items"] == result["done"] == result["released_rows"] == 10
    assert result["pairs_equal"] == result["records_reproduced"] == 10, result["differences"]
    assert result["grades"] == result["grades_equal"] == result["points_equal"] == 30
    for label, m in result["metrics"].items():
        assert m["run"] == m["official_points"] and m["run_se"] == m["official_points_se"], label
        if m["official_script"] is not None:  # the checkout's aggregate_metrics.py prints 2 and 3 decimals
            assert f"{m['run']:.2f} ± {m['run_se']:.3f}" == \
                f"{m['official_script']['mean']:.2f} ± {m['official_script']['se']:.3f}", label


def test_images_are_part_of_the_match():
    from skillweave.agents.llm import _redact_images
    from skillweave.providers.replay import conversation_key

    def ask(data):
        return [{"role": "user", "content": [{"type": "text", "text": "What is the title?"},
                                             {"type": "image", "data": data, "mime": "image/png"}]}]

    live_a, live_b = ask("aGVsbG8="), ask("d29ybGQ=")
    assert conversation_key(live_a) != conversation_key(live_b)  # the same question about two charts
    assert conversation_key(_redact_images(live_a)) == conversation_key(live_a)  # stored copy matches the live one
    system = [{"role": "system", "content": "be brief"}, *live_a]
    assert conversation_key(system) == conversation_key(live_a)
