#!/usr/bin/python
"""Write a set of small files under one folder in one step, reporting which changed.

The role writes its whole nginx configuration twice per run (the staging copy
that `nginx -t` checks, then the live one); one module call per set instead of
one template task per file keeps a run quick on a fleet.
"""

from __future__ import annotations

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: nginx_lb_files
short_description: Write several files under one folder, atomically each, and report which changed
description:
  - Each file is written only when its content differs, through a temporary file and a rename,
    so that a reader never sees half a file. Missing parent folders are created (mode 0755).
  - Supports check mode and diff mode.
options:
  dest:
    description: Folder the file names are relative to.
    type: path
    required: true
  files:
    description: Relative file name to content.
    type: dict
    required: true
  mode:
    description: Mode of the files.
    type: raw
    default: "0644"
  owner:
    description: Owner of the files.
    type: str
    default: root
  group:
    description: Group of the files.
    type: str
    default: root
author: wsfleet
"""

EXAMPLES = r"""
- name: Write two files
  nginx_lb_files:
    dest: /etc/nginx
    files:
      nginx.conf: "{{ lookup('ansible.builtin.template', 'nginx.conf.j2') }}"
      wsfleet/upstream.conf: "{{ lookup('ansible.builtin.template', 'upstream.conf.j2') }}"
"""

RETURN = r"""
changed_files:
  description: Relative names of the files whose content, mode or ownership changed (or would change).
  type: list
  elements: str
  returned: always
"""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "files": {"type": "dict", "required": True},
            "mode": {"type": "raw", "default": "0644"},
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
        },
        supports_check_mode=True,
    )
    dest = module.params["dest"]
    changed_files: list[str] = []
    diffs: list[dict[str, str]] = []
    for name, content in sorted(module.params["files"].items()):
        if os.path.isabs(name) or ".." in name.split("/"):
            module.fail_json(msg=f"nginx_lb_files: {name!r} must be a relative path inside {dest}")
        content = "" if content is None else str(content)
        path = os.path.join(dest, name)
        before = _read(path)
        content_changed = before != content
        if content_changed:
            diffs.append({"before_header": path, "after_header": path, "before": before or "", "after": content})
        if content_changed and not module.check_mode:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(content)
            module.atomic_move(temporary, path)
        attributes = module.load_file_common_arguments(
            {"path": path, **{k: module.params[k] for k in ("mode", "owner", "group")}}
        )
        attributes_changed = before is not None and module.set_fs_attributes_if_different(attributes, False)
        if content_changed and not module.check_mode:
            module.set_fs_attributes_if_different(attributes, False)
        if content_changed or attributes_changed:
            changed_files.append(name)
    module.exit_json(changed=bool(changed_files), changed_files=changed_files, diff=diffs)


if __name__ == "__main__":
    main()
