"""include_file (OpenSER 1.2+): another file's text in place of the directive, errors named in
that file, a reload that sees a change in an included file."""

import pytest

from pyproxy.assembly.loader import load_config
from pyproxy.config.errors import ConfigErrors


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def test_included_items_and_statements(tmp_path):
    write(tmp_path, "modules.cfg", 'loadmodule "sl"\nloadmodule "maxfwd"\n')
    (tmp_path / "routes").mkdir()
    write(tmp_path / "routes", "checks.cfg", 'if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }\n')
    main = write(tmp_path, "main.cfg", 'children=1\ninclude_file "modules.cfg"\n'
                                       'route {\n    include_file "routes/checks.cfg";\n    sl_send_reply("200", "OK");\n}\n')
    config = load_config(str(main))
    assert set(config.modules) == {"sl", "maxfwd"}
    assert config.script.source.index("if (not _truth(") < config.script.source.index("return 1")


def test_an_error_in_an_included_file_names_that_file(tmp_path):
    inc = write(tmp_path, "bad.cfg", 'loadmodule "sl"\nchidlren=4\n')
    main = write(tmp_path, "main.cfg", 'include_file "bad.cfg"\nroute { sl_send_reply("200", "OK"); }\n')
    with pytest.raises(ConfigErrors) as e:
        load_config(str(main))
    assert str(e.value.errors[0]).startswith(f"{inc}:2:1: unknown parameter 'chidlren'")


@pytest.mark.parametrize("text, message", [
    ('include_file "nope.cfg"\n', 'main.cfg:1:14: include_file "nope.cfg": cannot read '),
    ('include_file "main.cfg"\n', 'main.cfg:1:1: include_file "main.cfg": the file includes itself'),
    ("include_file nope\n", "main.cfg:1:14: expected the file as a quoted string"),
    ('include_file "last.cfg"\n', "last.cfg:1:1: expected the file as a quoted string"),
])
def test_include_errors(tmp_path, text, message):
    write(tmp_path, "last.cfg", "include_file")      # the directive, as the last word of a file
    main = write(tmp_path, "main.cfg", text)
    with pytest.raises(ConfigErrors) as e:
        load_config(str(main))
    assert message in str(e.value.errors[0])


def test_the_digest_a_reload_compares_covers_included_files(tmp_path):
    inc = write(tmp_path, "r.cfg", 'sl_send_reply("200", "one");\n')
    main = write(tmp_path, "main.cfg", 'loadmodule "sl"\nroute { include_file "r.cfg" }\n')
    first = load_config(str(main)).digest
    inc.write_text('sl_send_reply("200", "two");\n')
    assert load_config(str(main)).digest != first


def test_includes_nested_too_deep(tmp_path):
    for n in range(12):
        write(tmp_path, f"d{n}.cfg", f'include_file "d{n + 1}.cfg"\n')
    write(tmp_path, "d12.cfg", "")
    with pytest.raises(ConfigErrors) as e:
        load_config(str(write(tmp_path, "main.cfg", 'include_file "d0.cfg"\n')))
    assert "files include each other more than 10 deep" in str(e.value.errors[0])
