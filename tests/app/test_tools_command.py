"""Command rendering: every value is one argument; simple commands run without a shell."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from app.tools.command import BooleanValue, CollectionValue, CommandError, CommandTemplate, DatasetValue

PATH = "/usr/bin:/bin"
NASTY = "$(touch pwned); `id`; echo 'x' \"y\" > z | w & \\ * ~ #\n\t\u00e9"


def render(source: str, **context):
    return CommandTemplate(source).render(context, path=PATH)


def test_simple_command_becomes_an_argv_list_with_redirection():
    cmd = render("cat {{ a }} {{ b }} > {{ out }}", a=DatasetValue("/d/a b"), b="/d/c", out="/o/out")
    assert cmd.argv == ["cat", "/d/a b", "/d/c"]
    assert cmd.stdout == "/o/out" and not cmd.append
    assert cmd.script == "cat '/d/a b' /d/c > /o/out"


@pytest.mark.parametrize("value", [NASTY, "", "-n", "a=b", "'", "\"", "$HOME", "--x=$(id)"])
def test_any_value_is_exactly_one_argument(value):
    cmd = render("printf %s {{ v }}", v=value)
    assert cmd.argv == ["printf", "%s", value]
    # The shell form reads back to the same words.
    assert shlex.split(cmd.script) == ["printf", "%s", value]


def test_shell_form_quotes_every_value_and_runs_nothing(tmp_path):
    cmd = render("printf %s {{ v }} | cat > {{ out }}", v=NASTY, out=str(tmp_path / "out"))
    assert cmd.argv is None  # a pipe needs the shell
    subprocess.run(["/bin/bash", "-c", cmd.script], cwd=tmp_path, check=True)
    assert (tmp_path / "out").read_text() == NASTY
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "z").exists()


@pytest.mark.parametrize("template", [
    "cat {{ a }} | sort", "cat {{ a }}; ls", "echo $HOME {{ a }}", "cat '{{ a }}'", "cd / && cat {{ a }}",
    "X=1 cat {{ a }}", "cat {{ a }}\ncat {{ a }}", "cat *.txt {{ a }}", "cat ~/x {{ a }}", "set -e {{ a }}",
    "no-such-program-anywhere {{ a }}",
])
def test_templates_needing_a_shell_are_not_run_as_argv(template):
    assert render(template, a="/x").argv is None


def test_redirections_in_and_append():
    cmd = render("sort < {{ a }} >> {{ out }}", a="/in", out="/out")
    assert cmd.argv == ["sort"] and cmd.stdin == "/in" and cmd.stdout == "/out" and cmd.append


def test_values_inside_words_and_lists():
    cmd = render("sort --key={{ c }},{{ c }}{{ s }} {{ files }}", c=2, s="n", files=[DatasetValue("/a"), DatasetValue("/b c")])
    assert cmd.argv == ["sort", "--key=2,2n", "/a", "/b c"]


def test_booleans_conditionals_and_collections():
    pair = CollectionValue("paired", [("forward", DatasetValue("/f")), ("reverse", DatasetValue("/r"))])
    cmd = render("{% if flag %}cat {{ p.forward }} {{ p.reverse }} {{ flag }}{% else %}true{% endif %}",
                 flag=BooleanValue(True, "--yes", "--no"), p=pair)
    assert cmd.argv == ["cat", "/f", "/r", "--yes"]
    assert render("cat {{ p }}", p=pair).argv == ["cat", "/f", "/r"]


def test_none_renders_as_an_empty_argument():
    assert render("printf %s {{ v }}", v=None).argv == ["printf", "%s", ""]


def test_nul_in_a_value_is_refused():
    with pytest.raises(CommandError, match="NUL"):
        render("cat {{ v }}", v="a\x00b")


def test_syntax_errors_name_the_line():
    with pytest.raises(CommandError, match="line 2"):
        CommandTemplate("cat\n{% for x in %}")


def test_the_sandbox_blocks_internals():
    with pytest.raises(CommandError):
        render("cat {{ v.__class__.__mro__[1].__subclasses__() }}", v="x")


def test_empty_command_is_an_error():
    with pytest.raises(CommandError, match="empty"):
        render("{% if false %}x{% endif %}")
