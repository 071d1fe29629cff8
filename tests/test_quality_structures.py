"""Structure templates: TG-263 names, labels, interpreted types, and Eclipse structure template XML."""

from __future__ import annotations

import pytest

from dicomflow.core.quality.eclipse import read_structure_template
from dicomflow.core.quality.nomenclature import is_tg263_name, structure_problems
from dicomflow.core.rules.model import Template
from dicomflow.errors import InputError

ECLIPSE_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<StructureTemplate xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" Version="1.1">
  <Preview ID="Prostate VMAT" Type="Structure" ApprovalStatus="Approved" TreatmentSite="Pelvis"
           Description="prostate 78 Gy" LastModified="2024-05-02 10:00:00" />
  <Structures>
    <Structure ID="Bladder" Name="">
      <Identification><VolumeID /><VolumeCode>Bladder</VolumeCode><VolumeType>Organ</VolumeType>
        <VolumeCodeTable>99VMS_STRUCTCODE</VolumeCodeTable>
        <StructureCode Code="15900" CodeScheme="FMA" CodeSchemeVersion="3.2" /></Identification>
      <ColorAndStyle>Bladder</ColorAndStyle>
      <DVHLineColor>-256</DVHLineColor>
    </Structure>
    <Structure ID="Rectum" Name="">
      <Identification><VolumeType>Organ</VolumeType></Identification>
      <Color>RGB139069019</Color>
    </Structure>
    <Structure ID="PTV_High" Name="">
      <Identification><VolumeType>PTV</VolumeType></Identification>
    </Structure>
    <Structure ID="External" Name="">
      <Identification><VolumeType>External</VolumeType></Identification>
      <Color>#00FF00</Color>
    </Structure>
  </Structures>
</StructureTemplate>
"""


def test_tg263_names_are_checked_against_the_shipped_nomenclature():
    for name in ("Lung_L", "Lungs", "Body", "External", "SpinalCord", "SpinalCord_PRV05", "PTV_High", "Parotid_R"):
        assert is_tg263_name(name), name
    for name in ("lung left", "LUNG_L", "Lung_Lx", "Tumour", ""):
        assert not is_tg263_name(name), name
    assert structure_problems("Lung_L", "Lung L", "ORGAN") == []
    problems = structure_problems("left lung", "a label far too long", "LUNG")
    assert len(problems) == 3 and "TG-263" in problems[0] and "16" in problems[1] and "Interpreted Type" in problems[2]


def test_a_template_lists_its_nomenclature_problems():
    template = Template.from_dict({"name": "t", "processor": "builtin.ct_body_lungs", "rois": [
        {"key": "a", "name": "Lung_L", "color": [1, 2, 3], "type": "ORGAN"},
        {"key": "b", "name": "left lung", "color": [1, 2, 3], "type": "ORGAN"}]})
    assert template.structure_problems() == ["'left lung' is not a TG-263 structure name"]
    local = Template.from_dict({**template.to_dict(), "nomenclature": "local"})
    assert local.structure_problems() == []
    assert Template.from_dict(local.to_dict()).nomenclature == "local"  # round trip


def test_eclipse_structure_template_imports():
    template = read_structure_template(ECLIPSE_XML)
    assert (template["name"], template["site"]) == ("Prostate VMAT", "Pelvis")
    by_name = {s["name"]: s for s in template["structures"]}
    assert list(by_name) == ["Bladder", "Rectum", "PTV_High", "External"]
    assert by_name["Bladder"]["color"] == [255, 255, 0]  # ARGB -256 = 0xFFFFFF00
    assert by_name["Rectum"]["color"] == [139, 69, 19]
    assert by_name["External"]["color"] == [0, 255, 0] and by_name["External"]["type"] == "EXTERNAL"
    assert by_name["PTV_High"]["type"] == "PTV" and by_name["Bladder"]["type"] == "ORGAN"
    # it becomes a valid, TG-263-clean template
    made = Template.from_dict({"name": "prostate", "processor": "builtin.ct_body_lungs", "rois": template["structures"]})
    assert made.structure_problems() == []


@pytest.mark.parametrize("xml, message", [
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
     b'<StructureTemplate><Structures><Structure ID="&lol2;"/></Structures></StructureTemplate>', "DTD"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
     b'<StructureTemplate><Structures><Structure ID="&xxe;"/></Structures></StructureTemplate>', "DTD"),
    (b"<StructureTemplate><Structures>", "well-formed"),
    (b"<ClinicalProtocol/>", "not an Eclipse structure template"),
    (b"<StructureTemplate><Structures/></StructureTemplate>", "no structures"),
    (b'<StructureTemplate><Structures><Structure ID="A&lt;script&gt;"/></Structures></StructureTemplate>', "ID must be"),
    (b'<StructureTemplate><Structures><Structure ID="Heart"><Identification><VolumeType>Banana</VolumeType>'
     b'</Identification></Structure></Structures></StructureTemplate>', "VolumeType"),
    (b'<StructureTemplate><Structures><Structure ID="Heart"/><Structure ID="HEART"/></Structures></StructureTemplate>', "twice"),
])
def test_hostile_or_broken_xml_is_refused(xml, message):
    with pytest.raises(InputError, match=message):
        read_structure_template(xml)


def test_oversized_xml_is_refused_before_parsing():
    with pytest.raises(InputError, match="larger than"):
        read_structure_template(b"<StructureTemplate>" + b" " * (3 * 1024 * 1024) + b"</StructureTemplate>")
