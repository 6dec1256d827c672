"""What a reload applies and what it leaves for the next restart (assembly/reload.py), on
configs loaded as the master loads them."""

from pyproxy.assembly import reload
from pyproxy.assembly.loader import load_config_text

BASE = """\
children=2
listen=udp:127.0.0.1:5060
debug=2
loadmodule "sl"
loadmodule "tm"
loadmodule "maxfwd"
modparam("tm", "fr_timer", 30)
modparam("maxfwd", "max_limit", 256)
route { sl_send_reply("200", "%s"); }
"""


def load(text, running=None):
    return load_config_text(text, "/tmp/reload-test.cfg", running=running)


def test_script_log_level_and_function_parameters_apply_the_rest_is_named():
    old = load(BASE % "one")
    script = old.script
    new = load(BASE.replace("children=2", "children=4\nserver_header=\"Server: After\"").replace("debug=2", "debug=4")
               .replace('"fr_timer", 30', '"fr_timer", 10').replace('"max_limit", 256', '"max_limit", 70') % "two",
               running=old)
    assert reload.refused(old, new) is None
    assert new.held_back == ["children (2 -> 4)", "server_header (Server: pyproxy -> Server: After)",
                             'modparam("tm", "fr_timer") (30 -> 10)']
    assert new.settings.children == 2 and new.modparams["tm"]["fr_timer"] == 30    # compiled with these
    reload.apply(old, new)
    assert old.script is script and old.script.routes == new.script.routes      # swapped in place
    assert old.settings.debug == 4 and old.settings.children == 2
    assert old.modparams["maxfwd"]["max_limit"] == 70 and old.modparams["tm"]["fr_timer"] == 30
    assert old.digest == new.digest != load(BASE % "one").digest


def test_another_set_of_modules_is_refused():
    old = load(BASE % "x")
    new = load(BASE.replace('loadmodule "tm"\n', "").replace('modparam("tm", "fr_timer", 30)\n', "") % "x",
               running=old)
    assert "no longer loads tm" in reload.refused(old, new)
