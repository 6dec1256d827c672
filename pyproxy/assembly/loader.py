"""Loading a config: read, parse, resolve parameters, load modules, check TLS domains, compile.

``load_config`` is what the master (and ``pyproxy -c``) calls. Every phase adds its errors to one
list, so a single run names every problem with its file:line:col; anything fatal raises
``ConfigErrors`` at the end.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from .. import modules as module_registry
from ..config.ast import Assign, DomainSide, LoadModule, ModParam, RouteBlock, TLSDomain, ValueKind
from ..config.errors import ConfigError, ConfigErrors, ErrorList, Position
from ..config.parser import parse
from ..config.settings import PARAMS, DomainSpec, Scope, Settings, convert, resolve
from ..config.values import Proto, SocketSpec, config_path, parse_host_port, state_dir
from ..script import core
from ..script.engine import Script
from ..script.exports import Function, LoadEnv, ModuleExports
from . import reload
from .compiler import Compiler


@dataclass
class LoadedConfig:
    path: str
    settings: Settings
    modules: dict[str, ModuleExports]
    modparams: dict[str, dict]
    tls_domains: list[DomainSpec]
    script: Script
    warnings: list[tuple[Position | None, str]]
    digest: str = ""            # of the text: a reload applies in the workers what the master checked
    held_back: list[str] = field(default_factory=list)     # a reload's changes that wait for a restart

    @property
    def cfg_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    @property
    def state_dir(self) -> str:
        """Where relative paths of files pyproxy writes resolve (see values.state_dir)."""
        return state_dir(self.settings.state_dir, self.cfg_dir)

    def summary(self) -> str:
        s = self.settings
        listens = ", ".join(map(str, s.listen)) or f"default udp+tcp port {s.port}"
        return (f"{self.path}: OK: listen {listens}; {len(self.modules)} module(s); "
                f"{len(self.script.routes)} route block(s); {len(self.tls_domains)} TLS domain(s); "
                f"children={s.children}, fork={'yes' if s.fork else 'no'}, "
                f"TLS {'disabled' if s.disable_tls else 'enabled'}")


def load_config(path: str, overrides=None, running: LoadedConfig | None = None) -> LoadedConfig:
    """``overrides(settings)``: the command line's, applied before anything reads the settings.
    ``running``: a reload, checked and compiled against what the processes hold (see reload.py)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigErrors([ConfigError(None, f"{path}: cannot read the config: {e.strerror}")]) from None
    return load_config_text(text, path, overrides, running)


def load_config_text(text: str, path: str = "<config>", overrides=None,
                     running: LoadedConfig | None = None) -> LoadedConfig:
    try:
        return _load(text, path, overrides, running)
    except RecursionError:      # conditions nested hundreds of parentheses deep
        too_deep = "the config nests too deeply for pyproxy (parentheses or blocks hundreds of levels deep)"
        raise ConfigErrors([ConfigError(Position(path, 1, 1), too_deep)]) from None


def _load(text: str, path: str, overrides, running) -> LoadedConfig:
    errors, warnings = ErrorList(), []
    tree = parse(text, path, errors)
    items = tree.items
    settings = resolve([i for i in items if isinstance(i, Assign)], errors, warnings)
    if overrides:
        overrides(settings)
    _place_written_files(settings, os.path.dirname(os.path.abspath(path)))
    modules = _load_modules([i for i in items if isinstance(i, LoadModule)], errors, warnings)
    failed = {module_registry.module_name(i.path) for i in items if isinstance(i, LoadModule)} - set(modules)
    modparams = _modparams(modules, failed, [i for i in items if isinstance(i, ModParam)], errors,
                           warnings)
    held_back = reload.hold_back(running, settings, modparams) if running is not None else []
    domains = _tls_domains(settings, [i for i in items if isinstance(i, TLSDomain)], errors, warnings)
    _check_listen(settings, errors, warnings, path)
    _check_affinity(settings, modules, [i for i in items if isinstance(i, Assign)], errors)
    env = LoadEnv(settings, modparams)
    blocks = [i for i in items if isinstance(i, RouteBlock)]
    functions = _function_table(modules, errors)
    loaded = set(modules)
    compiler = Compiler(blocks, functions, env, errors,
                        lambda name: module_registry.unknown_function_hint(name, loaded, failed))
    script = compiler.compile()
    errors.raise_if_any()
    return LoadedConfig(path, settings, modules, modparams, domains, script, warnings,
                        _digest([text] + [t for _, t in tree.included]), held_back)


def _digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def _place_written_files(settings, cfg_dir: str) -> None:
    """Files pyproxy writes, named by a relative path, go to the state folder: tls_keylog_file,
    and with tls_autogenerate=yes the certificate and key unless the operator put them beside
    the config."""
    folder = state_dir(settings.state_dir, cfg_dir)
    if folder == cfg_dir:
        return
    names = ["tls_keylog_file"] + (["tls_certificate", "tls_private_key"] if settings.tls_autogenerate else [])
    for name in names:
        value = getattr(settings, name)
        if value and not (os.path.isabs(value) or value.startswith("CFG_DIR/") or
                          os.path.exists(config_path(value, cfg_dir))):
            setattr(settings, name, os.path.join(folder, value))


def _load_modules(loads: list[LoadModule], errors: ErrorList, warnings: list) -> dict[str, ModuleExports]:
    modules: dict[str, ModuleExports] = {}
    for item in loads:
        try:
            exports = module_registry.load(item.path)
        except module_registry.ModuleNotFound as e:
            errors.add(item.pos, f"loadmodule: {e}")
            continue
        if exports.name in modules:
            warnings.append((item.pos, f"module '{exports.name}' is loaded twice; the second loadmodule is ignored"))
            continue
        modules[exports.name] = exports
    for exports in modules.values():
        for dep in exports.depends:
            if dep not in modules:
                pos = next(i.pos for i in loads if module_registry.module_name(i.path) == exports.name)
                errors.add(pos, f"module '{exports.name}' needs module '{dep}': add loadmodule \"{dep}\"")
    return modules


def _modparams(modules: dict[str, ModuleExports], failed: set[str], items: list[ModParam],
               errors: ErrorList, warnings: list) -> dict:
    values = {name: {p.name: p.default for p in m.params} for name, m in modules.items()}
    set_at: dict[tuple[str, str], object] = {}
    for item in items:
        key = (item.module.text, item.param.text)
        if key in set_at:           # every parameter holds one value: the last one
            warnings.append((item.pos, f"modparam(\"{key[0]}\", \"{key[1]}\") is set again (first at line "
                                       f"{set_at[key].line}): the last value is used"))
        set_at.setdefault(key, item.pos)
        name = item.module.text
        module = modules.get(name)
        if name in failed:
            continue                # its loadmodule error says it all
        if module is None:
            errors.add(item.module.pos, f"modparam: module '{name}' is not loaded (loadmodule it first)")
            continue
        param = next((p for p in module.params if p.name == item.param.text), None)
        if param is None:
            known = ", ".join(p.name for p in module.params) or "none"
            errors.add(item.param.pos, f"modparam: module '{name}' has no parameter '{item.param.text}' "
                                       f"(its parameters: {known})")
            continue
        v = item.value
        if param.type is int:
            if v.number is None:
                errors.add(v.pos, f"modparam: parameter '{param.name}' of module '{name}' is a number, "
                                  f"found {v.describe()}")
                continue
            if (param.low is not None and v.number < param.low) or (param.high is not None and v.number > param.high):
                bounds = f"at least {param.low}" if param.high is None else f"from {param.low} to {param.high}"
                errors.add(v.pos, f"modparam: parameter '{param.name}' of module '{name}' must be {bounds}, "
                                  f"found {v.number}")
                continue
            values[name][param.name] = v.number
        else:
            if v.kind is not ValueKind.STRING:
                errors.add(v.pos, f"modparam: parameter '{param.name}' of module '{name}' is a string, "
                                  f"found {v.describe()} (quote it)")
                continue
            if param.check is not None:
                try:
                    param.check(v.text)
                except ValueError as e:
                    errors.add(v.pos, f"modparam: parameter '{param.name}' of module '{name}': {e}")
                    continue
            values[name][param.name] = v.text
    return values


def _function_table(modules: dict[str, ModuleExports], errors: ErrorList) -> dict[str, tuple[Function, str]]:
    table: dict[str, tuple[Function, str]] = {f.name: (f, "core") for f in core.FUNCTIONS}
    for module in modules.values():
        for f in module.functions:
            if f.name in table and table[f.name][1] != "core":
                errors.add(None, f"function {f.name}() is exported by both module '{table[f.name][1]}' "
                                 f"and module '{module.name}'")
            table[f.name] = (f, module.name)
    return table


def _tls_domains(settings: Settings, blocks: list[TLSDomain], errors: ErrorList, warnings: list) -> list[DomainSpec]:
    domains: list[DomainSpec] = []
    seen: dict[tuple, Position] = {}
    for block in blocks:
        domain = _domain_selector(block, settings, errors)
        if domain is None:
            continue
        scope = Scope.SERVER_DOMAIN if block.side is DomainSide.SERVER else Scope.CLIENT_DOMAIN
        for a in block.params:
            param = PARAMS.get(a.name)
            if param is None or param.section != "tls":
                errors.add(a.pos, f"'{a.name}' is not a TLS parameter; a {domain.label.split('[')[0]} block "
                                  f"takes TLS parameters only")
                continue
            if not param.scope & scope:
                errors.add(a.pos, f"'{a.name}' cannot be set in a {domain.label.split('[')[0]} block: "
                                  f"{_scope_text(param.scope)}")
                continue
            value = convert(param, a, errors, warnings)
            if value is not None:
                domain.params[a.name] = value
        if domain.key in seen:
            sni = f" with tls_server_name \"{domain.key[1]}\"" if domain.key[1] else ""
            errors.add(block.pos, f"{domain.label}{sni} is defined twice (first at line {seen[domain.key].line})")
            continue
        seen[domain.key] = block.pos
        domains.append(domain)
    return domains


def _scope_text(scope: Scope) -> str:
    if scope == Scope.GLOBAL:
        return "it is a global parameter only"
    if scope & Scope.SERVER_DOMAIN:
        return "it applies to server domains only"
    return "it applies to client domains only"


def _domain_selector(block: TLSDomain, settings: Settings, errors: ErrorList) -> DomainSpec | None:
    sel = block.selector
    if block.side is DomainSide.CLIENT and sel.kind is ValueKind.STRING:
        if not sel.text:
            errors.add(sel.pos, "a tls_client_domain name must not be empty")
            return None
        return DomainSpec(block.side, None, sel.text, pos=block.pos)
    try:
        spec = parse_host_port(sel.text, allow_proto=False)
    except ValueError as e:
        errors.add(sel.pos, f"tls_{block.side.value}_domain[...]: {e}")
        return None
    if spec.port is None:
        errors.add(sel.pos, f"tls_{block.side.value}_domain[{sel.text}]: expected IP:PORT (the port is required)")
        return None
    if block.side is DomainSide.SERVER and not _is_tls_listen(settings, spec):
        errors.add(sel.pos, f"tls_server_domain[{sel.text}] names a socket that is not a listen=tls: entry "
                            f"(add listen=tls:{sel.text})")
    return DomainSpec(block.side, spec, None, pos=block.pos)


def _is_tls_listen(settings: Settings, spec: SocketSpec) -> bool:
    for s in settings.listen:
        if s.proto is Proto.TLS and s.host.strip("[]").lower() == spec.host.strip("[]").lower() and \
                (s.port or settings.tls_port_no) == spec.port:
            return True
    return False


def _check_affinity(settings: Settings, modules: dict[str, ModuleExports], assigns: list, errors: ErrorList) -> None:
    """A module keeping per-call state (tm) needs every message of a call in one worker."""
    stateful = [m.name for m in modules.values() if m.per_call_state]
    if stateful and settings.call_affinity == "no" and settings.fork and settings.children > 1:
        pos = next((a.pos for a in assigns if a.name == "call_affinity"), None)
        errors.add(pos, f"call_affinity=no cannot work with module '{stateful[0]}': the replies and "
                        f"retransmissions of a call would reach workers that do not hold its transactions "
                        f"(use call_affinity=auto, or children=1)")


def _check_listen(settings: Settings, errors: ErrorList, warnings: list, path: str) -> None:
    if settings.disable_tls and any(s.proto is Proto.TLS for s in settings.listen):
        warnings.append((None, f"{path}: listen=tls:... is ignored because TLS is disabled "
                               f"(set disable_tls=no to enable it)"))
    if settings.disable_tcp and any(s.proto is Proto.TCP for s in settings.listen):
        warnings.append((None, f"{path}: listen=tcp:... is ignored because disable_tcp=yes"))
