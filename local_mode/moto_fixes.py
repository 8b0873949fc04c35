"""Where moto's stand-in differs from the real service in a way our workflow depends on, made real.

UpdateModelPackage: SageMaker merges `CustomerMetadataProperties` into the package's metadata and
removes only the keys in `CustomerMetadataPropertiesToRemove` (hence that parameter); a call that
sets only the approval status leaves the metadata alone. moto 5 replaces the whole map with the
call's (None when the call has none), so an approval would erase the `space` the pipeline
recorded; and it clears the approval status when a call (the workflow's RecordLive) sets only
metadata, where SageMaker keeps it. Applied by local mode's control plane and by the test suite
(tests/conftest.py).
"""

from __future__ import annotations

from moto.sagemaker.models import SageMakerModelBackend

_original_update = SageMakerModelBackend.update_model_package


def _update_model_package_merging_metadata(self, model_package_arn, model_approval_status, approval_description,
                                           customer_metadata_properties, customer_metadata_properties_to_remove,
                                           additional_inference_specifications_to_add):
    name = self.model_package_name_mapping.get(model_package_arn, model_package_arn)
    package = self.model_packages.get(name)
    before = dict(package.customer_metadata_properties or {}) if package is not None else {}
    description = package.approval_description if package is not None else None
    status = model_approval_status if model_approval_status is not None or package is None else package.model_approval_status
    arn = _original_update(self, model_package_arn, status, approval_description, customer_metadata_properties,
                           [], additional_inference_specifications_to_add)
    merged = {**before, **(customer_metadata_properties or {})}
    for key in customer_metadata_properties_to_remove or []:
        merged.pop(key, None)
    package.customer_metadata_properties = merged or None
    if approval_description is None:
        package.approval_description = description
    return arn


def apply() -> None:
    SageMakerModelBackend.update_model_package = _update_model_package_merging_metadata
