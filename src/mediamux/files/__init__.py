"""Local file access and saved outputs: the places where a tool touches the disk.

* :mod:`~mediamux.files.confinement`: which local files may be read (the allowed folders, checked
  on the real path and again on the opened descriptor) and which saved output a resource may serve;
* :mod:`~mediamux.files.uploads`: what may be sent to a provider, and multipart bodies streamed from
  disk;
* :mod:`~mediamux.files.outputs`: the output folder, the one place mediamux writes: reads that never
  follow a link out of it, atomic private writes, and the start-up clean-up of interrupted downloads;
* :mod:`~mediamux.files.downloads`: provider outputs fetched without SSRF or leaked credentials and
  saved atomically under content-addressed names;
* :mod:`~mediamux.files.store`: where saved outputs end up — the local folder, or S3-compatible storage
  shared by replicas (:mod:`~mediamux.files.s3`, imported only when ``MEDIAMUX_OUTPUT_URL`` is set).

This package knows nothing of MCP; its errors belong to :mod:`mediamux.errors`, and every message
says what went wrong *and* what the user can do about it. Import from here: the modules are the
package's own layout.
"""

from mediamux.files.confinement import (
    ALLOWED_DIRS_ENV,
    AllowedDirs,
    FileAccessError,
    PathNotAllowed,
    default_allowed_dirs,
    open_confined,
    parse_allowed_dirs,
    refuse_too_wide,
    resolve_allowed_path,
    too_wide,
)
from mediamux.files.downloads import (
    OUTPUTS_PREFIX,
    DownloadError,
    DownloadTooSlow,
    Resolver,
    SavedOutput,
    download_output,
    resolve_host,
    save_output_bytes,
)
from mediamux.files.outputs import (
    STALE_TEMP_AGE_S,
    check_output_name,
    open_output,
    output_path,
    prepare_output_dir,
    remove_stale_temp_files,
    write_output,
)
from mediamux.files.store import (
    LocalOutputStore,
    OutputNotFound,
    OutputStore,
    OutputStoreError,
    OutputTooLarge,
    Stored,
    open_output_store,
    write_named,
)
from mediamux.files.uploads import (
    MEDIA_KINDS,
    MultipartUpload,
    check_uploadable,
    multipart_file_upload,
    raw_file_upload,
)

__all__ = [
    "ALLOWED_DIRS_ENV",
    "MEDIA_KINDS",
    "OUTPUTS_PREFIX",
    "STALE_TEMP_AGE_S",
    "AllowedDirs",
    "DownloadError",
    "DownloadTooSlow",
    "FileAccessError",
    "LocalOutputStore",
    "MultipartUpload",
    "OutputNotFound",
    "OutputStore",
    "OutputStoreError",
    "OutputTooLarge",
    "PathNotAllowed",
    "Resolver",
    "SavedOutput",
    "Stored",
    "check_output_name",
    "check_uploadable",
    "default_allowed_dirs",
    "download_output",
    "multipart_file_upload",
    "open_confined",
    "open_output",
    "open_output_store",
    "output_path",
    "parse_allowed_dirs",
    "prepare_output_dir",
    "raw_file_upload",
    "refuse_too_wide",
    "remove_stale_temp_files",
    "resolve_allowed_path",
    "resolve_host",
    "save_output_bytes",
    "too_wide",
    "write_named",
    "write_output",
]
