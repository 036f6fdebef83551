"""Static files storage for production: whitenoise's compressed, hashed files.

The browser client is ES modules importing each other by relative path. Rewriting those imports
to the hashed names means a deploy can never pair a new module with a cached old one.
"""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
